"""The order saga the cross-process saga tests run: order, payment, shipping."""

from __future__ import annotations

from lion_nb.patterns import SagaDefinition, SagaDefinitionBuilder, SagaStep


def order_saga() -> SagaDefinition:
    """Create order -> charge payment -> ship, each compensated on the way back."""
    return (SagaDefinitionBuilder("order-saga", "Order")
            .add_step(SagaStep("create-order", "Create order", {"action": "create"},
                               "order-service").with_compensation({"action": "cancel"}))
            .add_step(SagaStep("charge", "Charge", {"action": "charge"},
                               "payment-service").with_compensation({"action": "refund"}))
            .add_step(SagaStep("ship", "Ship", {"action": "ship"}, "shipping-service"))
            .build())
