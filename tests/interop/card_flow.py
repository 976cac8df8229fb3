"""Drives the citizen pages in headless Chromium (Selenium) with JavaScript on, proving identity
with a citizen certificate through the local signing agent (`mydata card-agent`, spec D51): the
page's script sends the challenge and the PIN to the agent and submits its signature.

Usage: card_flow.py '<json>' where the JSON object holds
  url          the SP's redirect to the platform
  national_id, birth_date
  pins         the PINs to try in order (the last one should be right)
  wait_for     optional: a substring of the final URL to wait for (the SP's page)
Prints one JSON object: steps (the data-step of each platform page seen, in order), statuses
(what the page said after each wrong PIN), final_url.
"""
import json
import os
import sys
import time

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser_flow import click_and_wait, driver, left_page, step  # noqa: E402


def main():
    a = json.loads(sys.argv[1])
    d = driver(javascript=True)
    out = {"steps": [], "statuses": []}
    try:
        d.get(a["url"])
        for _ in range(10):
            s, heading = step(d)
            if s is None:
                break
            if not out["steps"] or out["steps"][-1] != s:
                out["steps"].append(s)
            if s == "terms":
                click_and_wait(d, "accept-terms", heading)
            elif s == "basic":
                d.find_element(By.ID, "national_id").send_keys(a["national_id"])
                d.find_element(By.ID, "birth_date").send_keys(a["birth_date"])
                click_and_wait(d, "submit-basic", heading)
            elif s == "identity":
                click_and_wait(d, "cert-challenge", heading)
                _, heading = step(d)
                # The script shows the agent's box once it has run.
                WebDriverWait(d, 30).until(
                    lambda dr: dr.find_element(By.ID, "card-agent").is_displayed())
                pins = list(a["pins"])
                for pin in pins[:-1]:
                    field = d.find_element(By.ID, "card-pin")
                    field.clear()
                    field.send_keys(pin)
                    d.find_element(By.ID, "card-sign").click()
                    WebDriverWait(d, 30).until(
                        lambda dr: "PIN" in dr.find_element(By.ID, "card-status").text
                        and "…" not in dr.find_element(By.ID, "card-status").text)
                    out["statuses"].append(d.find_element(By.ID, "card-status").text)
                field = d.find_element(By.ID, "card-pin")
                field.clear()
                field.send_keys(pins[-1])
                d.find_element(By.ID, "card-sign").click()
                WebDriverWait(d, 30).until(left_page(heading))
            elif s == "consent":
                click_and_wait(d, "agree", heading)
                break
        deadline = time.time() + 60
        while time.time() < deadline and a.get("wait_for", "") not in d.current_url:
            time.sleep(0.2)
        out["final_url"] = d.current_url
    finally:
        d.quit()
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
