// The live feed: one EventSource for the whole page (the server sends a snapshot a second to
// every browser from one shared reading), and the recent history the charts draw from.
//
// History lives in the page, so it starts when the page is opened and survives moving between
// pages (hash routes, no reload). A snapshot's rates are null when the server cannot know them
// yet (its first snapshot, a counter that went back): the charts show a gap there.

const MAX_POINTS = 300; // 5 minutes at one snapshot a second
const history = new Map(); // key -> {t: [seconds], <field>: [values]}
const listeners = new Set();
let latestSnapshot = null;

export const topicKey = (topic) => `t\u0000${topic}`;
export const subscriptionKey = (topic, name) => `s\u0000${topic}\u0000${name}`;

/** Opens the stream; ``onState`` is told "live", or "down" while the browser reconnects. */
export function connect(onState) {
  const source = new EventSource("dashboard/events");
  source.onopen = () => onState("live");
  source.onerror = () => onState("down"); // EventSource retries by itself
  source.onmessage = (event) => {
    const snapshot = JSON.parse(event.data);
    record(snapshot);
    latestSnapshot = snapshot;
    for (const listener of listeners) listener(snapshot);
  };
}

/** Calls ``listener`` with every snapshot, the latest one at once; returns the unsubscribe. */
export function onSnapshot(listener) {
  listeners.add(listener);
  if (latestSnapshot) listener(latestSnapshot);
  return () => listeners.delete(listener);
}

/** The newest snapshot, or null before the first. */
export function latest() {
  return latestSnapshot;
}

/** uPlot's data for ``key``: [times, ...one array per field]. */
export function series(key, fields) {
  const found = history.get(key);
  if (!found) return [[], ...fields.map(() => [])];
  return [found.t, ...fields.map((f) => found[f])];
}

function record(snapshot) {
  const t = snapshot.at_ms / 1000;
  for (const topic of snapshot.topics) {
    push(topicKey(topic.name), t, { published: topic.published_per_s, records: topic.records });
  }
  for (const { stats, rates } of snapshot.subscriptions) {
    push(subscriptionKey(stats.topic, stats.subscription), t, {
      depth: stats.depth ?? null,
      in_flight: stats.in_flight ?? null,
      delayed: stats.delayed ?? null,
      backlog: stats.backlog ?? null,
      oldest_s: stats.oldest_age_ms === undefined || stats.oldest_age_ms === null
        ? (stats.mode === "stream" ? null : 0) : stats.oldest_age_ms / 1000,
      dead_letters: stats.dead_letters ?? null,
      lag: stats.lag ?? null,
      published: rates.published,
      delivered: rates.delivered,
      acked: rates.acked,
      dead_lettered: rates.dead_lettered,
    });
  }
}

function push(key, t, values) {
  let found = history.get(key);
  if (!found) {
    found = { t: [] };
    for (const name of Object.keys(values)) found[name] = [];
    history.set(key, found);
  }
  found.t.push(t);
  for (const [name, value] of Object.entries(values)) found[name].push(value);
  if (found.t.length > MAX_POINTS) {
    for (const column of Object.values(found)) column.shift();
  }
}
