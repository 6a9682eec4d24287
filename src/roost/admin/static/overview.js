// The overview: every subscription (queues first-class) and every topic, one row each, with
// the numbers an operator scans for and a sparkline of the last few minutes.

import { sparkline } from "./charts.js";
import {
  displayName, fmtAge, fmtBytes, fmtCount, fmtRate, h, link, setCell, subscriptionHash, table,
  topicHash,
} from "./dom.js";
import { series, subscriptionKey, topicKey } from "./feed.js";

const OLD_MS = 60_000; // an oldest message older than this is shown as a warning

export function overview(main) {
  const [subsTable, subsBody] = table(
    ["Queue / subscription", "Mode", "#Depth / lag", "#In flight", "#Oldest", "#Publish/s",
      "#Deliver/s", "#DLQ", "Last 5 min"]);
  const [topicsTable, topicsBody] = table(
    ["Topic", "#Partitions", "#Records", "#Size", "#Publish/s", "Subscriptions", "Publish/s, 5 min"]);
  // Hidden until the first snapshot: "none yet" must not flash while the page connects.
  const subsEmpty = h("p", { class: "empty", "data-empty": "", hidden: "" }, "No subscriptions yet.");
  main.append(
    h("h1", {}, "Overview"),
    h("h2", {}, "Queues and subscriptions"), subsTable, subsEmpty,
    h("h2", {}, "Topics"), topicsTable,
  );
  const subRows = new Rows(subsBody, subscriptionRow);
  const topicRows = new Rows(topicsBody, topicRow);

  return {
    crumbs: [],
    update(snapshot) {
      subsEmpty.hidden = snapshot.subscriptions.length > 0;
      subRows.update(snapshot.subscriptions.map((line) => [
        subscriptionKey(line.stats.topic, line.stats.subscription), line]));
      topicRows.update(snapshot.topics.map((line) => [topicKey(line.name), line]));
    },
    destroy() {
      subRows.destroy();
      topicRows.destroy();
    },
  };
}

/** Table rows kept by key: made once, updated in place, removed when their key goes. */
class Rows {
  constructor(body, make) {
    this.body = body;
    this.make = make;
    this.rows = new Map();
  }

  update(entries) {
    const seen = new Set();
    for (const [key, line] of entries) {
      seen.add(key);
      let row = this.rows.get(key);
      if (!row) {
        row = this.make(line);
        this.rows.set(key, row);
      }
      this.body.append(row.tr); // in the snapshot's order (by name); moves, does not copy
      row.update(line);
      row.spark.update(series(key, [row.sparkField(line)]));
    }
    for (const [key, row] of this.rows) {
      if (!seen.has(key)) {
        row.spark.destroy();
        row.tr.remove();
        this.rows.delete(key);
      }
    }
  }

  destroy() {
    for (const row of this.rows.values()) row.spark.destroy();
  }
}

function subscriptionRow(line) {
  const { topic, subscription } = line.stats;
  const cells = {};
  const cell = (field, cls = "num") => (cells[field] = h("td", { class: cls, "data-field": field }));
  const spark = sparkline("depth");
  const tr = h("tr", { "data-key": `${topic}/${subscription}` },
    h("td", {}, link(subscriptionHash(topic, subscription), displayName(topic, subscription))),
    h("td", {}, line.stats.mode),
    cell("depth"), cell("in_flight"), cell("oldest"), cell("published"), cell("delivered"),
    cell("dead_letters"), h("td", { class: "spark" }, spark.el));
  return {
    tr, spark,
    sparkField: (l) => (l.stats.mode === "stream" ? "lag" : "depth"),
    update({ stats, rates }) {
      const stream = stats.mode === "stream";
      const depth = stream ? stats.lag : stats.depth;
      setCell(cells.depth, fmtCount(depth), depth);
      setCell(cells.in_flight, stream ? "—" : fmtCount(stats.in_flight), stats.in_flight);
      setCell(cells.oldest, stream ? "—" : fmtAge(stats.oldest_age_ms), stats.oldest_age_ms);
      cells.oldest.classList.toggle("warn", (stats.oldest_age_ms ?? 0) > OLD_MS);
      setCell(cells.published, fmtRate(rates.published), rates.published);
      setCell(cells.delivered, fmtRate(rates.delivered), rates.delivered);
      const dlq = stats.dead_letter_topic ? stats.dead_letters : null;
      setCell(cells.dead_letters, fmtCount(dlq), dlq);
      cells.dead_letters.classList.toggle("bad", dlq > 0);
    },
  };
}

function topicRow(line) {
  const cells = {};
  const cell = (field, cls = "num") => (cells[field] = h("td", { class: cls, "data-field": field }));
  const spark = sparkline("published");
  const tr = h("tr", { "data-key": line.name },
    h("td", {}, link(topicHash(line.name), line.name)),
    cell("partitions"), cell("records"), cell("size"), cell("published"),
    cell("subscriptions", ""), h("td", { class: "spark" }, spark.el));
  return {
    tr, spark,
    sparkField: () => "published",
    update(topic) {
      setCell(cells.partitions, fmtCount(topic.partitions.length), topic.partitions.length);
      setCell(cells.records, fmtCount(topic.records), topic.records);
      setCell(cells.size, fmtBytes(topic.size_bytes), topic.size_bytes);
      setCell(cells.published, fmtRate(topic.published_per_s), topic.published_per_s);
      const names = topic.subscriptions.join(", ");
      setCell(cells.subscriptions, names || "—", names);
    },
  };
}
