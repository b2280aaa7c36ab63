// Element helpers. Text goes in through textContent only: nothing here parses HTML,
// so text from logs or runs can never become markup.

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "text") element.textContent = value;
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

const SVG = "http://www.w3.org/2000/svg";

export function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined) continue;
    if (name === "text") element.textContent = value;
    else if (name === "class") element.setAttribute("class", value);
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(element) {
  element.replaceChildren();
  return element;
}

// Run `rebuild`, which replaces elements inside `root`, and then focus the new element
// that has the same id or `data-focus` key as the element focused before, if any.
// Views call this when a message changes what they show, so keyboard focus survives.
export function keepFocus(root, rebuild) {
  const focused = document.activeElement;
  const key = focused && focused !== root && root.contains(focused)
    ? (focused.id ? `#${CSS.escape(focused.id)}` : focused.dataset?.focus && `[data-focus="${CSS.escape(focused.dataset.focus)}"]`)
    : null;
  rebuild();
  if (key && !root.contains(focused)) root.querySelector(key)?.focus({ preventScroll: true });
}

// Ask for confirmation in the page's <dialog>; resolves true when the user confirms.
export function confirmAction(text, confirmLabel) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-yes").textContent = confirmLabel;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}
