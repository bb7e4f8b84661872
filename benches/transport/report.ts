/**
 * The benchmark's outputs: the Markdown table, the bars of issue 3 checked against the same run,
 * the SVG chart (hand-written: no chart dependency) and the README block.
 *
 * @module
 */

import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'

import { isShmpipe, sizeLabel, TRANSPORTS, type ShmpipeReceive, type Transport } from './common.js'
import type { CellResult } from './driver.js'

/** The README markers the benchmark block goes between. */
export const START_MARKER = '<!-- transport-bench:start -->'
export const END_MARKER = '<!-- transport-bench:end -->'

/** The machine, as one line: CPU model and cores, memory, OS, Node version. */
export function machineLine(): string {
  const cpus = os.cpus()
  let virt = ''
  try {
    const lscpu = execFileSync('lscpu', { encoding: 'utf8' })
    const hv = /^Hypervisor vendor:\s*(.+)$/m.exec(lscpu)?.[1]
    if (hv) virt = ` under ${hv.trim()}`
  } catch {
    // No lscpu: leave it out.
  }
  const gib = (os.totalmem() / 2 ** 30).toFixed(0)
  return (
    `${cpus[0]?.model.trim() ?? 'unknown CPU'}, ${cpus.length} vCPUs${virt}, ${gib} GiB RAM, ` +
    `${os.type()} ${os.release()}, Node ${process.version}`
  )
}

/** `n` with 3 significant digits (no exponent). */
function sig3(n: number): string {
  if (!Number.isFinite(n)) return '–'
  if (n >= 100) return Math.round(n).toLocaleString('en-US')
  if (n >= 10) return n.toFixed(1)
  if (n >= 1) return n.toFixed(2)
  if (n >= 0.1) return n.toFixed(3)
  return n.toPrecision(2)
}

function ratio(r: number): string {
  if (!Number.isFinite(r)) return '–'
  return `${r >= 10 ? Math.round(r) : r.toFixed(r >= 1 ? 1 : 2)}×`
}

/** Results by size, then transport. */
export function bySize(results: CellResult[]): Map<number, Map<Transport, CellResult>> {
  const out = new Map<number, Map<Transport, CellResult>>()
  for (const r of results) {
    if (!out.has(r.size)) out.set(r.size, new Map())
    out.get(r.size)!.set(r.transport, r)
  }
  return out
}

/** The name of a transport, as plain text; `shmpipeReceive`: how `shmpipe` received. */
export function transportName(t: Transport, shmpipeReceive: ShmpipeReceive = 'get'): string {
  if (t === 'shmpipe')
    return `shmpipe ${shmpipeReceive === 'iterator' ? 'for await' : `${shmpipeReceive}()`}`
  if (t === 'shmpipe_receive') return 'shmpipe receive()'
  return t
}

/** The column header of a transport (code in backticks). */
function column(t: Transport, shmpipeReceive: ShmpipeReceive): string {
  const name = transportName(t, shmpipeReceive)
  return name.startsWith('shmpipe ')
    ? `shmpipe \`${name.slice(8)}\``
    : t === 'memcpy' || t === 'zeromq'
      ? name
      : `\`${name}\``
}

/**
 * The Markdown table: one row per size; in each cell µs per message, GB/s (10^9 bytes) and the
 * ratio of its throughput to child_process's at that size.
 */
export function markdownTable(results: CellResult[], shmpipeReceive: ShmpipeReceive): string {
  const transports = TRANSPORTS.filter((t) => results.some((r) => r.transport === t))
  const lines = [
    `| size | ${transports.map((t) => column(t, shmpipeReceive)).join(' | ')} |`,
    `| ---: | ${transports.map(() => '---:').join(' | ')} |`,
  ]
  for (const [size, row] of bySize(results)) {
    const cp = row.get('child_process')?.gbps ?? NaN
    const cells = transports.map((t) => {
      const r = row.get(t)
      if (r === undefined) return ''
      if (r.error !== undefined) return 'failed'
      return `${sig3(r.nsPerMessage / 1e3)} µs · ${sig3(r.gbps)} GB/s · ${ratio(r.gbps / cp)}`
    })
    lines.push(`| ${sizeLabel(size)} | ${cells.join(' | ')} |`)
  }
  return lines.join('\n')
}

/** One bar of issue 3, checked. */
export interface Bar {
  text: string
  met: boolean
  detail: string
}

/**
 * Checks the bars of issue 3 for the shmpipe column `ours` against the results (bars whose
 * figures are missing are left out).
 */
export function checkBars(results: CellResult[], ours: Transport = 'shmpipe'): Bar[] {
  const rows = bySize(results)
  const g = (size: number, t: Transport): number =>
    rows.get(size)?.get(t === 'shmpipe' ? ours : t)?.gbps ?? NaN
  const bars: Bar[] = []
  const sizes = [...rows.keys()]
  const worst = (
    over: number[],
    t: Transport,
    f: (s: number) => number,
  ): { met: boolean; detail: string } => {
    let min = Infinity
    let at = 0
    for (const s of over) {
      const v = f(s)
      if (!(v >= min)) {
        min = v
        at = s
      }
    }
    return { met: min >= 0, detail: `lowest ${ratio(min)} ${t}, at ${sizeLabel(at)}` }
  }
  if (sizes.length > 0 && sizes.every((s) => Number.isFinite(g(s, 'child_process')))) {
    const w = worst(sizes, 'child_process', (s) => g(s, 'shmpipe') / g(s, 'child_process'))
    bars.push({
      text: 'faster than `child_process` at every size',
      met: sizes.every((s) => g(s, 'shmpipe') > g(s, 'child_process')),
      detail: w.detail,
    })
  }
  if (sizes.length > 0 && sizes.every((s) => Number.isFinite(g(s, 'zeromq')))) {
    const w = worst(sizes, 'zeromq', (s) => g(s, 'shmpipe') / g(s, 'zeromq'))
    bars.push({
      text: 'faster than `zeromq` at every size',
      met: sizes.every((s) => g(s, 'shmpipe') > g(s, 'zeromq')),
      detail: w.detail,
    })
  }
  const small = rows.get(100)
  if (small?.get(ours) && small.get('child_process')) {
    const us = small.get(ours)!.nsPerMessage / 1e3
    const x = g(100, 'shmpipe') / g(100, 'child_process')
    bars.push({
      text: '100 B: ≤ 2 µs per message',
      met: us <= 2,
      detail: `${sig3(us)} µs`,
    })
    bars.push({ text: '100 B: ≥ 3× `child_process`', met: x >= 3, detail: ratio(x) })
  }
  const big = sizes.filter((s) => s >= 1e6)
  const list = (f: (s: number) => number): string =>
    big.map((s) => `${sizeLabel(s)} ${ratio(f(s))}`).join(', ')
  if (big.length > 0) {
    const mem = (s: number): number => g(s, 'shmpipe') / g(s, 'memcpy')
    if (big.every((s) => Number.isFinite(g(s, 'memcpy'))))
      bars.push({
        text: '≥ 1 MB: ≥ 0.6× memcpy',
        met: big.every((s) => mem(s) >= 0.6),
        detail: list(mem),
      })
    const zmq = (s: number): number => g(s, 'shmpipe') / g(s, 'zeromq')
    if (big.every((s) => Number.isFinite(g(s, 'zeromq'))))
      bars.push({
        text: '≥ 1 MB: ≥ 2× `zeromq`',
        met: big.every((s) => zmq(s) >= 2),
        detail: list(zmq),
      })
  }
  const cpSizes = [1e7, 1e8].filter((s) => rows.has(s))
  if (cpSizes.length > 0 && cpSizes.every((s) => Number.isFinite(g(s, 'child_process')))) {
    const cp = (s: number): number => g(s, 'shmpipe') / g(s, 'child_process')
    bars.push({
      text: `≥ 5× \`child_process\` at ${cpSizes.map(sizeLabel).join(' and ')}`,
      met: cpSizes.every((s) => cp(s) >= 5),
      detail: cpSizes.map((s) => `${sizeLabel(s)} ${ratio(cp(s))}`).join(', '),
    })
  }
  return bars
}

/** The bars as a Markdown list. */
export function barsList(bars: Bar[]): string {
  return bars.map((b) => `- ${b.met ? '✅' : '❌'} ${b.text}: ${b.detail}`).join('\n')
}

/** The bars of every shmpipe column in `results`, each list under the column's name. */
export function allBars(results: CellResult[], shmpipeReceive: ShmpipeReceive): string {
  const out: string[] = []
  for (const t of ['shmpipe', 'shmpipe_receive'] as const) {
    if (!results.some((r) => r.transport === t)) continue
    const bars = checkBars(results, t)
    const met = bars.filter((b) => b.met).length
    out.push(
      `${column(t, shmpipeReceive)}: ${met} of ${bars.length} bars met`,
      '',
      barsList(bars),
      '',
    )
  }
  return out.join('\n').trim()
}

/** The spread of each cell's timed rounds: (slowest − fastest) / median, in percent. */
export function roundSpread(r: CellResult): number {
  const per = r.counts.map((n, i) => r.ns[i]! / n).sort((a, b) => a - b)
  if (per.length < 2) return 0
  return (100 * (per[per.length - 1]! - per[0]!)) / per[per.length >> 1]!
}

const COLORS: Record<Transport, string> = {
  memcpy: '#888888',
  shmpipe: '#d62728',
  shmpipe_receive: '#ff7f0e',
  child_process: '#1f77b4',
  zeromq: '#2ca02c',
  worker_threads: '#9467bd',
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

/** A log-log SVG chart of throughput (GB/s) against message size, one line per transport. */
export function svgChart(
  results: CellResult[],
  title: string,
  subtitle: string,
  shmpipeReceive: ShmpipeReceive,
): string {
  const W = 820
  const H = 500
  const L = 70
  const R = 190
  const T = 58
  const B = 56
  const ok = results.filter((r) => Number.isFinite(r.gbps) && r.gbps > 0)
  const sizes = [...new Set(ok.map((r) => r.size))].sort((a, b) => a - b)
  if (sizes.length === 0)
    return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}"/>\n`
  const x0 = Math.floor(Math.log10(sizes[0]!))
  const x1 = Math.max(x0 + 1, Math.ceil(Math.log10(sizes[sizes.length - 1]!)))
  const ys = ok.map((r) => Math.log10(r.gbps))
  const y0 = Math.floor(Math.min(...ys))
  const y1 = Math.max(y0 + 1, Math.ceil(Math.max(...ys)))
  const px = (size: number): number => L + ((Math.log10(size) - x0) / (x1 - x0)) * (W - L - R)
  const py = (gbps: number): number => T + ((y1 - Math.log10(gbps)) / (y1 - y0)) * (H - T - B)
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${L}" y="22" font-size="15" font-weight="bold">${esc(title)}</text>`,
    `<text x="${L}" y="40" fill="#555">${esc(subtitle)}</text>`,
  ]
  for (let e = x0; e <= x1; e++) {
    const x = px(10 ** e).toFixed(1)
    out.push(`<line x1="${x}" y1="${T}" x2="${x}" y2="${H - B}" stroke="#e5e5e5"/>`)
    out.push(
      `<text x="${x}" y="${H - B + 16}" text-anchor="middle">${esc(sizeLabel(10 ** e))}</text>`,
    )
  }
  for (let e = y0; e <= y1; e++) {
    const y = py(10 ** e).toFixed(1)
    const label = e >= 0 ? String(10 ** e) : (10 ** e).toFixed(-e)
    out.push(`<line x1="${L}" y1="${y}" x2="${W - R}" y2="${y}" stroke="#e5e5e5"/>`)
    out.push(`<text x="${L - 6}" y="${y}" dy="4" text-anchor="end">${label}</text>`)
  }
  out.push(
    `<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#999"/>`,
    `<text x="${(L + W - R) / 2}" y="${H - 14}" text-anchor="middle">message size (log)</text>`,
    `<text transform="translate(18 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">GB/s (log)</text>`,
  )
  let legend = T + 8
  for (const t of TRANSPORTS) {
    const pts = ok.filter((r) => r.transport === t).sort((a, b) => a.size - b.size)
    if (pts.length === 0) continue
    const color = COLORS[t]
    const width = isShmpipe(t) ? 3 : 2
    const dash = t === 'memcpy' ? ' stroke-dasharray="6 4"' : ''
    const d = pts.map((r) => `${px(r.size).toFixed(1)},${py(r.gbps).toFixed(1)}`).join(' ')
    out.push(
      `<polyline points="${d}" fill="none" stroke="${color}" stroke-width="${width}"${dash}/>`,
    )
    for (const r of pts)
      out.push(
        `<circle cx="${px(r.size).toFixed(1)}" cy="${py(r.gbps).toFixed(1)}" r="3" fill="${color}"/>`,
      )
    out.push(
      `<line x1="${W - R + 16}" y1="${legend}" x2="${W - R + 42}" y2="${legend}" stroke="${color}" stroke-width="${width}"${dash}/>`,
      `<text x="${W - R + 48}" y="${legend}" dy="4">${esc(transportName(t, shmpipeReceive))}</text>`,
    )
    legend += 20
  }
  out.push('</svg>')
  return `${out.join('\n')}\n`
}

/** Replaces the text between the README's markers with `block`. */
export function writeReadmeBlock(readmePath: string, block: string): void {
  const readme = readFileSync(readmePath, 'utf8')
  const start = readme.indexOf(START_MARKER)
  const end = readme.indexOf(END_MARKER)
  if (start < 0 || end < start)
    throw new Error(`${readmePath} has no ${START_MARKER} … ${END_MARKER} section`)
  const next = `${readme.slice(0, start + START_MARKER.length)}\n${block.trim()}\n${readme.slice(end)}`
  writeFileSync(readmePath, next)
}
