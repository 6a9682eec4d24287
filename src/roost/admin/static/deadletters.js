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
  const list = h("div", { "data-field": "dead-letters" });
  const redrive = h("button", { class: "primary", "data-action": "redrive", onclick: redriveAll },
    `Redrive to ${topic}`);
  const el = h("section", { "data-section": "dead-letters" },
    h("h2", {}, "Dead letters ", h("span", { class: "muted" }, `in ${deadLetterTopic}`)),
    h("div", { class: "toolbar" }, redrive, h("button", { onclick: load }, "Refresh"), note),
    list);
  let count = null;
  let loads = 0;

  async function load() {
    const mine = ++loads; // only the newest answer is drawn
    try {
      const letters = await call("GET", `${base}/dead-letters?limit=${LIMIT}`);
      if (mine === loads) list.replaceChildren(render(letters));
    } catch (error) {
      if (mine === loads) list.replaceChildren(h("p", { class: "empty bad" }, String(error)));
    }
  }

  async function redriveAll() {
    redrive.disabled = true;
    note.textContent = "moving…";
    try {
      // Only letters that died on this topic; the broker paces it (100 a second by default).
      const { moved } = await call("POST", `${base}/redrive`, { source_topic: topic });
      note.textContent = `moved ${moved} back to ${topic}`;
    } catch (error) {
      note.textContent = String(error);
    } finally {
      redrive.disabled = false;
      load();
    }
  }

  return {
    el,
    update(deadLetters) {
      if (deadLetters !== count) {
        count = deadLetters;
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
