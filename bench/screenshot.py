"""Render a saved mechscope HTML view to a PNG in headless Chromium (for README pictures).

    python bench/screenshot.py view.html docs/images/out.png [--width 1200] [--height 800]
"""

from __future__ import annotations

import argparse
import pathlib


def screenshot(html: str | pathlib.Path, png: str | pathlib.Path, width: int = 1200, height: int = 800) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--window-size={width},{height}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        driver.get(pathlib.Path(html).resolve().as_uri())
        full = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(max(height, full), 4000))
        pathlib.Path(png).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(png))
    finally:
        driver.quit()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html"), ap.add_argument("png")
    ap.add_argument("--width", type=int, default=1200), ap.add_argument("--height", type=int, default=800)
    a = ap.parse_args()
    screenshot(a.html, a.png, a.width, a.height)
