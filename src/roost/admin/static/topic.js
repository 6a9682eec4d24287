// The page of one topic: what is published to it, its partitions, every subscription reading
// it, and each consumer group (stream subscription) with its lag per partition.

import { timeChart } from "./charts.js";
import {
  fmtBytes, fmtCount, fmtRate, h, link, setCell, subscriptionHash, table,
} from "./dom.js";
import { series, topicKey } from "./feed.js";

export function topicPage(main, topic) {
  const key = topicKey(topic);
  const missing = h("p", { class: "empty" }, `No topic ${topic}.`);
  const tiles = {};
  const tile = (field, label) => h("div", { class: "tile" }, h("div", { class: "label" }, label),
    (tiles[field] = h("div", { class: "value", "data-field": field })));
  const published = timeChart("published", "Published, records per second", [{ label: "published" }]);
  const records = timeChart("records", "Records stored", [{ label: "records" }]);
  const [partitionTable, partitionBody] = table(
    ["Partition", "#Start offset", "#End offset", "#Size", "#Published since start", "State"]);
  const [subsTable, subsBody] = table(["Subscription", "Mode", "#Depth / lag", "#Deliver/s"]);
  const groups = h("div", { "data-section": "groups" });
  const content = h("div", {},
    h("div", { class: "tiles" }, tile("partitions", "Partitions"), tile("records", "Records"),
      tile("size", "Size"), tile("published", "Publish/s")),
    h("div", { class: "charts" }, published.el, records.el),
    h("h2", {}, "Partitions"), partitionTable,
    h("h2", {}, "Subscriptions"), subsTable,
    groups);
  main.append(h("h1", {}, topic, h("span", { class: "badge" }, "topic")), missing, content);

  return {
    crumbs: [],
    update(snapshot) {
      const line = snapshot.topics.find((t) => t.name === topic);
      missing.hidden = Boolean(line);
      content.hidden = !line;
      if (!line) return;
      setCell(tiles.partitions, fmtCount(line.partitions.length), line.partitions.length);
      setCell(tiles.records, fmtCount(line.records), line.records);
      setCell(tiles.size, fmtBytes(line.size_bytes), line.size_bytes);
      setCell(tiles.published, fmtRate(line.published_per_s), line.published_per_s);
      published.update(series(key, ["published"]));
      records.update(series(key, ["records"]));
      partitionBody.replaceChildren(...line.partitions.map(partitionRow));
      const subs = snapshot.subscriptions.filter((s) => s.stats.topic === topic);
      subsBody.replaceChildren(...subs.map(subscriptionRow));
      groups.replaceChildren(...subs.filter((s) => s.stats.mode === "stream").map(groupLag));
    },
    destroy() {
      published.destroy();
      records.destroy();
    },
  };
}

function partitionRow(p) {
  const num = (v) => h("td", { class: "num" }, v);
  return h("tr", {}, h("td", {}, String(p.partition)), num(fmtCount(p.start_offset)),
    num(fmtCount(p.end_offset)), num(fmtBytes(p.size_bytes)), num(fmtCount(p.published)),
    p.write_failed ? h("td", { class: "bad" }, "refuses writes (restart to recover)")
      : h("td", { class: "muted" }, "ok"));
}

function subscriptionRow({ stats, rates }) {
  const depth = stats.mode === "stream" ? stats.lag : stats.depth;
  return h("tr", {},
    h("td", {}, link(subscriptionHash(stats.topic, stats.subscription), stats.subscription)),
    h("td", {}, stats.mode), h("td", { class: "num" }, fmtCount(depth)),
    h("td", { class: "num" }, fmtRate(rates.delivered)));
}

/** A consumer group: who is in it, and per partition its owner, commit and lag. */
function groupLag({ stats }) {
  const [lagTable, body] = table(["Partition", "Owner", "#Committed", "#End offset", "#Lag"]);
  for (const p of stats.partitions) {
    body.append(h("tr", { "data-partition": p.partition }, h("td", {}, String(p.partition)),
      h("td", {}, p.owner ?? "—"), h("td", { class: "num" }, fmtCount(p.committed)),
      h("td", { class: "num" }, fmtCount(p.end_offset)),
      h("td", { class: "num", "data-field": "lag" }, fmtCount(p.lag))));
  }
  const who = stats.members.length ? stats.members.join(", ") : "no members";
  return h("section", { "data-group": stats.subscription },
    h("h2", {}, "Consumer group ", link(subscriptionHash(stats.topic, stats.subscription),
      stats.subscription), h("span", { class: "muted" }, ` · lag ${fmtCount(stats.lag)} · ${who}`)),
    lagTable);
}
