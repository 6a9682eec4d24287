// The dead-letter browser of one subscription: the letters waiting in its dead-letter topic,
// each with the x-roost-* headers that say why it died, and a button that moves them back.
//
// Both go through the JSON API (GET .../dead-letters, POST .../redrive). The list is read again
// whenever the live dead-letter count changes, and after a redrive.

import { call } from "./api.js";
import { fmtTime, h, table } from "./dom.js";

const LIMIT = 100; // letters shown at most (the API's peek limit)

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
  const el = h("section", { "data-section": "dead-letters" },
    h("h2", {}, "Dead letters ", h("span", { class: "muted" }, `in ${deadLetterTopic}`)),
    h("div", { class: "toolbar" }, open, h("button", { onclick: load }, "Refresh"), note),
    form, shown, list);
  let count = null;
  let listed = 0;
  let loads = 0;

  async function load() {
    const mine = ++loads; // only the newest answer is drawn
    try {
      const letters = await call("GET", `${base}/dead-letters?limit=${LIMIT}`);
      if (mine !== loads) return;
      listed = letters.length;
      list.replaceChildren(render(letters));
      showCount();
    } catch (error) {
      if (mine === loads) list.replaceChildren(h("p", { class: "empty bad" }, String(error)));
    }
  }

  function showCount() {
    // The list holds the first LIMIT letters; the live count says how many wait in all.
    const total = count ?? listed;
    shown.textContent = total > 0 ? `${listed} of ${total.toLocaleString("en-US")}` : "";
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
