// DOM helpers of the web client: element building, keyed list updates, icons.
// User data only ever reaches the page through textContent / attributes.

export const $ = (sel, root = document) => root.querySelector(sel);

/** el('li', {class: 'x', 'data-testid': 'y', onclick: f}, 'text', child…) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c !== null && c !== undefined && c !== false) node.append(c); // strings become text nodes
  }
  return node;
}

/**
 * Keyed list update: reuses existing child nodes by key, creates missing ones,
 * drops the rest, and only moves nodes that are out of place (moving a focused
 * node would steal keyboard focus).
 */
export function reconcile(container, nodes, items, keyOf, create, update) {
  const keep = new Set();
  let prev = null;
  for (const item of items) {
    const key = keyOf(item);
    keep.add(key);
    let node = nodes.get(key);
    if (!node) {
      node = create(item);
      nodes.set(key, node);
    }
    update(node, item);
    const want = prev ? prev.nextSibling : container.firstChild;
    if (node !== want) container.insertBefore(node, want);
    prev = node;
  }
  for (const [key, node] of nodes) {
    if (!keep.has(key)) {
      node.remove();
      nodes.delete(key);
    }
  }
}

/** An inline SVG icon (emoji fonts are not everywhere). */
export function icon(d) {
  const NS = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', 'icon');
  svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(NS, 'path');
  path.setAttribute('d', d);
  svg.append(path);
  return svg;
}
