"""Screenshot of the QC review page of the demo run (README figure): Debian's headless Chromium.

Run after `make demo`: .venv/bin/python docs/make_qc_page_screenshot.py
"""

import shutil

from playwright.sync_api import sync_playwright

from dnqsm.names import cohort_file

PAGE = cohort_file("results/demo/dnqsm", "qc_page").resolve()
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1200, "height": 820})
    page.goto(PAGE.as_uri())
    page.select_option("#sort", "flags")
    page.keyboard.press("u")  # the most-flagged session: uncertain, then on to the next
    page.keyboard.press("k")
    page.wait_for_timeout(500)
    page.screenshot(path="docs/qc_page.png")
    browser.close()
