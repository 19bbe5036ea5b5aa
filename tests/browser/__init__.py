"""The tutorials as a person sees them: JupyterLab driven by headless Chromium.

``lab.py`` starts and stops the JupyterLab server and the browser, ``driver.py``
opens a notebook, runs every cell and reads the page back, ``checks.py`` turns
what the page shows into a list of problems. ``conftest.py`` holds the fixtures.
"""
