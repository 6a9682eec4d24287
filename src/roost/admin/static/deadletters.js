// The dead-letter browser of one subscription: the letters waiting in its dead-letter topic,
// each with the x-roost-* headers that say why it died, and a button that moves them back.
//
// Both go through the JSON API (GET .../dead-letters, POST .../redrive). The list is read again
// whenever the live dead-letter count changes, and after a redrive.

import { call } from "./api.js";
import { fmtTime, h, table } from "./dom.js";

const LIMIT = 100; // letters per page (the API's peek limit)

export function deadLetterBrowser(topic, deadLetterTopic) {
  const base = `api/v1/topics/${encodeURIComponent(deadLetterTopic)}`;
  const note = h("span", { class: "muted", "data-field": "redrive-note" });
  const shown = h("p", { class: "muted", "data-field": "dead-letters-shown" });
  const list = h("div", { "data-field": "dead-letters" });
  const open = h("button", { class: "primary", "data-action": "redrive", onclick: ask },
    `Redrive to ${topic}…`);
  const key = h("input", { "data-field": "redrive-key", placeholder: "any key" });
  const errorContains = h("input", { "data-field": "redrive-error", placeholder: "any error" });
  const question = h("span", { "data-field": "redrive-question" });
  const confirmButton = h("button", { class: "primary", "data-action": "redrive-confirm",
    onclick: redrive }, "Move them");
  // A redrive moves messages back into a live queue: it is asked for, not one click away.
  const form = h("div", { class: "toolbar", "data-section": "redrive-form", hidden: "" },
    question, h("label", {}, "key ", key), h("label", {}, "error contains ", errorContains),
    confirmButton, h("button", { "data-action": "redrive-cancel", onclick: cancel }, "Cancel"));
  const previous = h("button", { "data-action": "dead-letters-previous", onclick: back },
    "‹ Previous");
  const next = h("button", { "data-action": "dead-letters-next", onclick: forward }, "Next ›");
  const el = h("section", { "data-section": "dead-letters" },
    h("h2", {}, "Dead letters ", h("span", { class: "muted" }, `in ${deadLetterTopic}`)),
    h("div", { class: "toolbar" }, open, h("button", { onclick: load }, "Refresh"), note),
    form, h("div", { class: "toolbar" }, previous, shown, next), list);
  let count = null;
  let page = []; // the letters shown
  let cursors = []; // per page before this one, where it started ("" for the first)
  let loads = 0;

  async function load() {
    const mine = ++loads; // only the newest answer is drawn
    const after = cursors.length ? cursors[cursors.length - 1] : "";
    const query = `limit=${LIMIT}` + (after ? `&after=${encodeURIComponent(after)}` : "");
    try {
      const letters = await call("GET", `${base}/dead-letters?${query}`);
      if (mine !== loads) return;
      if (letters.length === 0 && cursors.length) { // this page emptied: show the one before
        cursors.pop();
        load();
        return;
      }
      page = letters;
      list.replaceChildren(render(letters));
      showCount();
    } catch (error) {
      if (mine === loads) list.replaceChildren(h("p", { class: "empty bad" }, String(error)));
    }
  }

  function forward() {
    const last = page[page.length - 1];
    cursors.push(`${last.partition}@${last.offset}`);
    load();
  }

  function back() {
    cursors.pop();
    load();
  }

  function showCount() {
    // A page holds LIMIT letters at most; the live count says how many wait in all.
    const total = count ?? page.length;
    const first = cursors.length * LIMIT;
    const range = page.length > 0 ? `${first + 1}–${first + page.length}` : "0";
    shown.textContent = total > 0 ? `${range} of ${total.toLocaleString("en-US")}` : "";
    previous.hidden = cursors.length === 0;
    next.hidden = page.length < LIMIT || first + page.length >= total;
  }

  function ask() {
    const total = (count ?? listed).toLocaleString("en-US");
    question.textContent = `Move ${total} dead letters (or those matching) back to ${topic}, `
      + "at most 100 a second?";
    form.hidden = false;
    open.disabled = true;
  }

  function cancel() {
    form.hidden = true;
    open.disabled = false;
  }

  async function redrive() {
    confirmButton.disabled = true;
    note.textContent = "moving…";
    // Only letters that died on this topic (and match the filter); the broker paces it.
    const body = { source_topic: topic };
    if (key.value) body.key = key.value;
    if (errorContains.value) body.error_contains = errorContains.value;
    try {
      const { moved } = await call("POST", `${base}/redrive`, body);
      note.textContent = `moved ${moved} back to ${topic}`;
    } catch (error) {
      note.textContent = String(error);
    } finally {
      confirmButton.disabled = false;
      cancel();
      load();
    }
  }

  return {
    el,
    update(deadLetters) {
      if (deadLetters !== count) {
        count = deadLetters;
        showCount();
        load();
      }
    },
  };
}

function render(letters) {
  if (letters.length === 0) {
    return h("p", { class: "empty", "data-empty": "" }, "No dead letters waiting.");
  }
  const [letterTable, body] = table(
    ["Where", "Key", "Value", "Why it died", "#Deliveries", "From", "Last delivered", "Headers"]);
  for (const letter of letters) {
    const header = Object.fromEntries(letter.headers.map((x) => [x.name, x.text]));
    const source = `${header["x-roost-source-topic"] ?? "?"}/${header["x-roost-source-partition"]
      ?? "?"}@${header["x-roost-source-offset"] ?? "?"}`;
    const last = Number(header["x-roost-last-delivery-ms"]);
    body.append(h("tr", { "data-offset": `${letter.partition}@${letter.offset}` },
      h("td", {}, `${letter.partition}@${letter.offset}`),
      h("td", { class: "value-text" }, letter.key_text ?? (letter.key ? "(binary)" : "—")),
      h("td", { class: "value-text" }, letter.value_text ?? "(binary)"),
      h("td", { class: "bad", "data-field": "reason" }, header["x-roost-last-error"] ?? "—"),
      h("td", { class: "num" }, header["x-roost-delivery-count"] ?? "—"),
      h("td", {}, source),
      h("td", {}, Number.isFinite(last) ? fmtTime(last) : "—"),
      h("td", {}, headersDetails(letter.headers))));
  }
  return letterTable;
}

function headersDetails(headers) {
  const rows = headers.map((x) =>
    h("tr", {}, h("td", {}, x.name), h("td", {}, x.text ?? `(binary, base64 ${x.value})`)));
  return h("details", {}, h("summary", {}, `${headers.length} headers`),
    h("table", { class: "headers" }, h("tbody", {}, rows)));
}
