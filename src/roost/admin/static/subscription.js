// The page of one subscription (a queue is a topic's subscription of the same name): live
// tiles and charts; per partition, depth (queue, keyed) or the consumer group's lag (stream);
// and, when it has one, the dead-letter browser.

import { timeChart } from "./charts.js";
import { deadLetterBrowser } from "./deadletters.js";
import {
  displayName, fmtAge, fmtCount, fmtRate, h, link, setCell, table, topicHash,
} from "./dom.js";
import { series, subscriptionKey } from "./feed.js";

// Each tile: [data-field, label, its number from (stats, rates), how that number reads].
const QUEUE_TILES = [
  ["depth", "Depth", (s) => s.depth, fmtCount],
  ["in_flight", "In flight", (s) => s.in_flight, fmtCount],
  ["delayed", "Delayed", (s) => s.delayed, fmtCount],
  ["backlog", "Backlog", (s) => s.backlog, fmtCount],
  ["oldest", "Oldest", (s) => s.oldest_age_ms, fmtAge],
  ["dead_letters", "Dead letters", (s) => (s.dead_letter_topic ? s.dead_letters : null), fmtCount],
];
const STREAM_TILES = [
  ["lag", "Lag", (s) => s.lag, fmtCount],
  ["members", "Members", (s) => s.members.length, fmtCount],
  ["generation", "Generation", (s) => s.generation, fmtCount],
];
const RATE_TILES = [
  ["published", "Publish/s", (s, r) => r.published, fmtRate],
  ["delivered", "Deliver/s", (s, r) => r.delivered, fmtRate],
  ["acked", "Ack/s", (s, r) => r.acked, fmtRate],
];

export function subscriptionPage(main, topic, name) {
  const key = subscriptionKey(topic, name);
  let page = null; // made from the first snapshot that has it: its mode decides the layout
  const missing = h("p", { class: "empty" }, `No subscription ${name} on topic ${topic}.`);
  main.append(h("h1", {}, displayName(topic, name)), missing);

  return {
    crumbs: [link(topicHash(topic), topic)],
    update(snapshot) {
      const line = snapshot.subscriptions.find(
        (l) => l.stats.topic === topic && l.stats.subscription === name);
      missing.hidden = Boolean(line);
      if (!line) return;
      page ??= build(main, line.stats);
      page.update(line, key);
    },
    destroy() {
      if (page) for (const chart of page.charts) chart.destroy();
    },
  };
}

function build(main, stats) {
  const stream = stats.mode === "stream";
  main.querySelector("h1").append(h("span", { class: "badge" }, stats.mode));
  // A stream has no acks: the group commits offsets instead.
  const tiles = stream
    ? [...STREAM_TILES, ...RATE_TILES.slice(0, 2)]
    : [...QUEUE_TILES, ...RATE_TILES];
  const tileCells = tiles.map(([field]) => h("div", { class: "value", "data-field": field }));
  const tileGrid = h("div", { class: "tiles" }, tiles.map(([, label], i) =>
    h("div", { class: "tile" }, h("div", { class: "label" }, label), tileCells[i])));

  const charts = stream
    ? [
      [timeChart("lag", "Consumer lag, records", [{ label: "lag" }]), ["lag"]],
      [timeChart("rates", "Rates, per second", [{ label: "published" }, { label: "delivered" }]),
        ["published", "delivered"]],
    ]
    : [
      [timeChart("depth", "Messages", [{ label: "depth" }, { label: "in flight" },
        { label: "delayed" }]), ["depth", "in_flight", "delayed"]],
      [timeChart("rates", "Rates, per second", [{ label: "published" }, { label: "delivered" },
        { label: "acked" }, { label: "dead-lettered" }]),
      ["published", "delivered", "acked", "dead_lettered"]],
      [timeChart("oldest", "Age of the oldest message, seconds", [{ label: "oldest" }]),
        ["oldest_s"]],
    ];

  const [partitionTable, partitionBody] = stream
    ? table(["Partition", "Owner", "#Committed", "#End offset", "#Lag"])
    : table(["Partition", "#Depth", "#Backlog", "#In flight", "#Delayed", "#Oldest", "#Ack floor",
      "#End offset"]);
  const members = h("p", { class: "muted", "data-field": "member-list" });
  const dead = !stream && stats.dead_letter_topic
    ? deadLetterBrowser(stats.topic, stats.dead_letter_topic) : null;

  main.append(tileGrid, h("div", { class: "charts" }, charts.map(([chart]) => chart.el)),
    h("h2", {}, stream ? "Consumer group: lag per partition" : "Partitions"),
    ...(stream ? [members] : []), partitionTable, ...(dead ? [dead.el] : []));

  return {
    charts: charts.map(([chart]) => chart),
    update({ stats: now, rates }, key) {
      tiles.forEach(([, , read, show], i) => {
        const raw = read(now, rates);
        setCell(tileCells[i], show(raw), raw);
      });
      for (const [chart, fields] of charts) chart.update(series(key, fields));
      partitionBody.replaceChildren(...now.partitions.map(stream ? streamRow : queueRow));
      if (stream) {
        members.textContent = now.members.length
          ? `Members: ${now.members.join(", ")} (generation ${now.generation})`
          : "No members: nobody reads this group now.";
      }
      dead?.update(now.dead_letters);
    },
  };
}

function queueRow(p) {
  const num = (v) => h("td", { class: "num" }, v);
  return h("tr", { "data-partition": p.partition }, h("td", {}, String(p.partition)),
    num(fmtCount(p.depth)), num(fmtCount(p.backlog)), num(fmtCount(p.in_flight)),
    num(fmtCount(p.delayed)), num(fmtAge(p.oldest_age_ms)), num(fmtCount(p.ack_floor)),
    num(fmtCount(p.end_offset)));
}

function streamRow(p) {
  const num = (v) => h("td", { class: "num" }, v);
  return h("tr", { "data-partition": p.partition }, h("td", {}, String(p.partition)),
    h("td", {}, p.owner ?? "—"), num(fmtCount(p.committed)), num(fmtCount(p.end_offset)),
    h("td", { class: "num", "data-field": "lag" }, fmtCount(p.lag)));
}
