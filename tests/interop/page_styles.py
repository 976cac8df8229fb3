"""Reads what headless Chromium renders on the platform's citizen pages (Selenium + chromedriver),
with JavaScript disabled for the pages as in browser_flow.py, so that a test can judge their
contrast (WCAG 2 AA) and where the focus is. The styles are read through WebDriver's script
execution, which runs in the browser's inspector and needs no script in the page.

Usage: page_styles.py '<json>' where the JSON object holds
  actions   a list, each one of
              {"get": URL}                  load URL
              {"type": {ID: TEXT, ...}}     clear the inputs with these ids, then type TEXT
              {"click": ID}                 click it and wait until the browser left the page
              {"collect": LABEL}            record the current page under LABEL
Prints one JSON object: {"pages": [PAGE, ...]}, one PAGE per "collect":
  label, url, step (data-step of the page, or null), focused (id of the focused element, or
  null), described (for the focused element: the text of the elements its aria-describedby
  names), elements: each visible element that shows text of its own (or is a form control) as
  {path, text, color, font_size, font_weight, disabled, layers}, where layers lists, from the
  element up to <html>, each one's {background, image, opacity} (computed values).
"""
import json
import sys

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from browser_flow import driver, left_page

COLLECT = r"""
const describe = (e) => {
  let p = e.tagName.toLowerCase();
  if (e.id) return p + '#' + e.id;
  if (typeof e.className === 'string' && e.className.trim()) {
    p += '.' + e.className.trim().split(/\s+/).join('.');
  }
  return p;
};
const path = (e) => {
  const parts = [];
  for (let x = e; x && x !== document.documentElement; x = x.parentElement) {
    parts.unshift(describe(x));
    if (x.id) break;
  }
  return parts.join(' > ');
};
const elements = [];
for (const el of document.body.querySelectorAll('*')) {
  const cs = getComputedStyle(el);
  if (cs.visibility !== 'visible') continue;
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) continue;
  const control = ['INPUT', 'BUTTON', 'SELECT', 'TEXTAREA'].includes(el.tagName);
  let text = '';
  if (el.tagName === 'INPUT' || el.tagName === 'TEXTAREA') {
    text = el.value || el.placeholder || '(empty ' + el.tagName.toLowerCase() + ')';
  } else {
    for (const n of el.childNodes) if (n.nodeType === Node.TEXT_NODE) text += n.textContent;
  }
  text = text.trim();
  if (!text && !control) continue;
  const layers = [];
  for (let x = el; x; x = x.parentElement) {
    const s = getComputedStyle(x);
    layers.push({background: s.backgroundColor, image: s.backgroundImage, opacity: s.opacity});
  }
  elements.push({
    path: path(el), text: text.slice(0, 80), color: cs.color, font_size: cs.fontSize,
    font_weight: cs.fontWeight, disabled: !!el.disabled, layers,
  });
}
const f = document.activeElement;
const focused = f && f !== document.body && f.id ? f.id : null;
let described = null;
if (f && f.getAttribute('aria-describedby')) {
  described = f.getAttribute('aria-describedby').split(/\s+/)
    .map((id) => document.getElementById(id))
    .map((e) => (e ? e.textContent.trim() : null));
}
const s = document.getElementById('step');
return {elements, focused, described, step: s ? s.getAttribute('data-step') : null};
"""


def main():
    a = json.loads(sys.argv[1])
    d = driver()
    pages = []
    try:
        for act in a["actions"]:
            if "get" in act:
                d.get(act["get"])
            elif "type" in act:
                for element_id, text in act["type"].items():
                    e = d.find_element(By.ID, element_id)
                    e.clear()
                    e.send_keys(text)
            elif "click" in act:
                old = d.find_element(By.TAG_NAME, "html")
                d.find_element(By.ID, act["click"]).click()
                WebDriverWait(d, 30).until(left_page(old))
            elif "collect" in act:
                page = d.execute_script(COLLECT)
                page["label"] = act["collect"]
                page["url"] = d.current_url
                pages.append(page)
            else:
                raise ValueError(f"unknown action {act!r}")
    finally:
        d.quit()
    print(json.dumps({"pages": pages}, ensure_ascii=False))


if __name__ == "__main__":
    main()
