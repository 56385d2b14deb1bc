#!/usr/bin/env node
// Standard EventSource client for checking ssemesh nodes and back ends with a
// WHATWG-compliant implementation that ssemesh does not ship itself.
//
// Usage: node client.js URL COUNT [LAST_EVENT_ID] [TYPES]
//
//   URL            stream to subscribe to
//   COUNT          exit 0 after this many messages
//   LAST_EVENT_ID  optional id sent as Last-Event-ID on the first connection
//                  (pass "" to skip it while still giving TYPES)
//   TYPES          optional comma-separated event types to listen for besides
//                  "message"; the env var EVENTSOURCE_TYPES is used otherwise
//
// Prints one JSON line per received message: {"type","data","lastEventId"}.
// Exits 1 after EVENTSOURCE_TIMEOUT_MS (default 20000) without COUNT messages,
// or as soon as the client gives up (a fatal answer such as 204 or 404), and
// 2 on bad usage.
import {EventSource} from 'eventsource'

function usage(msg) {
  process.stderr.write(`client.js: ${msg}\nusage: node client.js URL COUNT [LAST_EVENT_ID] [TYPES]\n`)
  process.exit(2)
}

const [url, countArg, initialLastEventId = '', typesArg] = process.argv.slice(2)
if (!url) usage('missing URL')
const count = Number.parseInt(countArg ?? '', 10)
if (!Number.isInteger(count) || count < 1) usage(`COUNT must be a positive integer, got ${JSON.stringify(countArg)}`)

const timeoutMs = Number.parseInt(process.env.EVENTSOURCE_TIMEOUT_MS ?? '20000', 10)
if (!Number.isInteger(timeoutMs) || timeoutMs < 1) usage('EVENTSOURCE_TIMEOUT_MS must be a positive integer')

const types = new Set(['message'])
for (const t of (typesArg ?? process.env.EVENTSOURCE_TYPES ?? '').split(',')) {
  if (t.trim() !== '') types.add(t.trim())
}

// The library sets Last-Event-ID itself on reconnects; the caller's id is only
// injected while the library has none of its own, i.e. on the first request.
function withInitialLastEventId(input, init) {
  const headers = new Headers(init?.headers ?? {})
  if (initialLastEventId !== '' && !headers.has('Last-Event-ID')) {
    headers.set('Last-Event-ID', initialLastEventId)
  }
  return fetch(input, {...init, headers})
}

const es = new EventSource(url, {fetch: withInitialLastEventId})
let received = 0

function finish(code, reason) {
  clearTimeout(timer)
  es.close()
  if (reason) process.stderr.write(`client.js: ${reason}\n`)
  // Wait for stdout to drain so that piped output is complete before exit.
  process.stdout.write('', () => process.exit(code))
}

const timer = setTimeout(
  () => finish(1, `timeout after ${timeoutMs} ms with ${received}/${count} messages`),
  timeoutMs,
)

function onMessage(ev) {
  if (received >= count) return
  received++
  process.stdout.write(JSON.stringify({type: ev.type, data: ev.data, lastEventId: ev.lastEventId}) + '\n')
  if (received >= count) finish(0)
}

for (const t of types) es.addEventListener(t, onMessage)

es.addEventListener('error', (ev) => {
  // readyState CLOSED means the library will not reconnect (fatal status or
  // content type); waiting for the timeout would only hide that.
  if (es.readyState === EventSource.CLOSED) {
    finish(1, `connection closed for good: ${ev.message ?? 'error'}${ev.code ? ` (status ${ev.code})` : ''}`)
    return
  }
  process.stderr.write(`client.js: error, reconnecting: ${ev.message ?? 'error'}\n`)
})

process.on('SIGINT', () => finish(130, 'interrupted'))
