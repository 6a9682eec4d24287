// Small DOM helpers and formatters. Every value that comes from the broker goes into the page
// as text (textContent), never as HTML: names, keys and message bodies are not trusted.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null) el.setAttribute(name, value);
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return el;
}

/** A table with a header row; returns [table, tbody]. Columns named "#..." are numeric. */
export function table(columns) {
  const head = h("tr", {}, columns.map((c) =>
    h("th", { class: c.startsWith("#") ? "num" : "" }, c.replace(/^#/, ""))));
  const body = h("tbody");
  return [h("table", {}, h("thead", {}, head), body), body];
}

/** A link to a page of this dashboard (hash routes: following one reloads nothing). */
export function link(hash, text) {
  return h("a", { href: hash }, text);
}

export const topicHash = (topic) => `#/t/${encodeURIComponent(topic)}`;
export const subscriptionHash = (topic, name) =>
  `#/s/${encodeURIComponent(topic)}/${encodeURIComponent(name)}`;

/** "jobs" for a queue (a topic and its subscription of the same name), else "orders › billing". */
export function displayName(topic, name) {
  return topic === name ? topic : `${topic} › ${name}`;
}

export function fmtCount(n) {
  return n === null || n === undefined ? "—" : n.toLocaleString("en-US");
}

export function fmtRate(perS) {
  if (perS === null || perS === undefined) return "—";
  return perS >= 100 ? Math.round(perS).toLocaleString("en-US") : perS.toFixed(1);
}

export function fmtAge(ms) {
  if (ms === null || ms === undefined) return "—";
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${(s / 60).toFixed(1)} min`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

export function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

export function fmtTime(ms) {
  return new Date(ms).toLocaleString();
}

/** Sets a cell's text and, for the tests and for humans, the raw value it shows. */
export function setCell(cell, text, raw) {
  if (cell.textContent !== text) cell.textContent = text;
  cell.dataset.value = raw === null || raw === undefined ? "" : String(raw);
}
