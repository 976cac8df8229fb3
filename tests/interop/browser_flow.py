"""Drives the platform's citizen pages in headless Chromium (Selenium + chromedriver), with
JavaScript disabled: the pages must work as plain HTML forms.

Usage: browser_flow.py '<json>' where the JSON object holds
  url         the SP's redirect to the platform (/service/{client_id}/{resources}/{tx_id}?...)
  national_id, birth_date, nhi_card_number, household_number
  decision    "agree" or "refuse"
  wait_for    optional: a substring of the final URL to wait for (the SP's page)
  wait_text   optional: a text to wait for on the final page (the page is reloaded until it shows)
Prints one JSON object: steps (the data-step of each platform page seen, in order), final_url,
final_text, and consent_rows (the dataset rows of the consent page).
"""
import json
import os
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def driver(javascript=False):
    """Headless Chromium; JavaScript off unless asked for (the pages must work without it)."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--no-first-run", "--no-default-browser-check", "--disable-extensions",
              "--disable-background-networking", "--disable-component-update",
              "--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable"):
        opts.add_argument(a)
    if not javascript:
        opts.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2})
    svc = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(options=opts, service=svc)


def step(d):
    """The platform page's step and its heading element, or (None, None) off the platform."""
    els = d.find_elements(By.ID, "step")
    return (els[0].get_attribute("data-step"), els[0]) if els else (None, None)


def left_page(old):
    """A wait condition: `old` (an element of the page being left) is no longer in the document.

    Chrome answers a node of a page that is being replaced with an inspector error ("Node with
    given id does not belong to the document") rather than a stale-element error; both mean the
    page was left. (Seen under load, where `expected_conditions.staleness_of` raised it instead of waiting.)
    """
    def check(_d):
        try:
            old.is_enabled()
            return False
        except StaleElementReferenceException:
            return True
        except WebDriverException as e:
            text = str(e)
            if "does not belong to the document" in text or "No node with given id" in text:
                return True
            raise
    return check


def click_and_wait(d, element_id, old):
    """Submits a form and waits until the browser has left the page (its heading went stale)."""
    d.find_element(By.ID, element_id).click()
    WebDriverWait(d, 30).until(left_page(old))


def main():
    a = json.loads(sys.argv[1])
    d = driver()
    out = {"steps": [], "consent_rows": []}
    try:
        d.get(a["url"])
        for _ in range(8):
            s, heading = step(d)
            if s is None:
                break
            out["steps"].append(s)
            if s == "terms":
                click_and_wait(d, "accept-terms", heading)
            elif s == "basic":
                d.find_element(By.ID, "national_id").send_keys(a["national_id"])
                d.find_element(By.ID, "birth_date").send_keys(a["birth_date"])
                click_and_wait(d, "submit-basic", heading)
            elif s == "identity":
                d.find_element(By.ID, "nhi_card_number").send_keys(a["nhi_card_number"])
                d.find_element(By.ID, "household_number").send_keys(a["household_number"])
                click_and_wait(d, "submit-pii", heading)
            elif s == "consent":
                out["consent_rows"] = [r.text for r in d.find_elements(By.CSS_SELECTOR, "#datasets tbody tr")]
                click_and_wait(d, a.get("decision", "agree"), heading)
                break
        deadline = time.time() + 30
        while time.time() < deadline:
            if a.get("wait_for", "") in d.current_url and a.get("wait_text", "") in d.find_element(By.TAG_NAME, "body").text:
                break
            time.sleep(0.2)
            if a.get("wait_text"):
                d.refresh()
        out["final_url"] = d.current_url
        out["final_text"] = d.find_element(By.TAG_NAME, "body").text
    finally:
        d.quit()
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
