/* Small DOM helpers. Every string that comes from a user or an agent is put on the page as
 * text (textContent, Text nodes, attributes), never parsed as HTML.
 */

export function byId(id) {
  return document.getElementById(id);
}

/* el("li", {class: "x", dataset: {...}}, child, "text", ...) */
export function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child); // strings become Text nodes
  }
  return node;
}

export function show(node, visible) {
  node.hidden = !visible;
}

/* Set a node's text from a string or a (nested) list of strings and nodes. */
export function fill(node, parts) {
  const flat = [];
  (function add(part) {
    if (Array.isArray(part)) part.forEach(add);
    else if (part !== null && part !== undefined && part !== "") flat.push(part);
  })(parts);
  node.replaceChildren(...flat);
}

export function setMessage(node, text) {
  fill(node, text);
  show(node, node.textContent !== "");
}

export function clear(node) {
  node.replaceChildren();
}

/* Text from users (ids, reasons, actors) is isolated, so that bidi controls or right-to-left
   letters in it cannot reorder what is around it: dir=auto on its element, or a <bdi> inside
   a sentence (see fill). */
export function userText(tag, className, text) {
  return el(tag, { class: className, dir: "auto", text: text });
}

export function isolate(text) {
  return el("bdi", { text: text });
}
