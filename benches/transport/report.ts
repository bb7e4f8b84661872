/**
 * The benchmark's outputs: the Markdown table, the bars of issue 3 checked against the same run,
 * the SVG chart (hand-written: no chart dependency); `results-doc.ts` writes them into the docs.
 *
 * @module
 */

import { execFileSync } from 'node:child_process'
import os from 'node:os'

import { isShmpipe, sizeLabel, TRANSPORTS, type ShmpipeReceive, type Transport } from './common.js'
import type { CellResult } from './driver.js'

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
  if (n >= 1000) return Number(n.toPrecision(3)).toLocaleString('en-US')
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
    return `shmpipe ${
      shmpipeReceive === 'iterator'
        ? 'for await'
        : shmpipeReceive === 'get-nowait'
          ? 'getNowait() || get()'
          : `${shmpipeReceive}()`
    }`
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

/** Which shmpipe column stands for shmpipe at a size. */
export type ShmpipeChoice = (size: number) => Transport

/** The call the README recommends: `get()` below 64 KiB, `receive()` (zero copy) from 64 KiB. */
export const RECOMMENDED: ShmpipeChoice = (size) => (size < 65536 ? 'shmpipe' : 'shmpipe_receive')

/**
 * Checks the bars of issue 3 for shmpipe, taken at each size from the column `ours` picks,
 * against the results. Bars whose figures are missing are left out.
 */
export function checkBars(results: CellResult[], ours: ShmpipeChoice = () => 'shmpipe'): Bar[] {
  const rows = bySize(results)
  const g = (size: number, t: Transport): number =>
    rows.get(size)?.get(t === 'shmpipe' ? ours(size) : t)?.gbps ?? NaN
  const bars: Bar[] = []
  const sizes = [...rows.keys()]
  const have = (t: Transport, over: number[]): boolean =>
    over.length > 0 &&
    over.every((s) => Number.isFinite(g(s, t)) && Number.isFinite(g(s, 'shmpipe')))
  /** The lowest ratio of `f` over `over`, and where. */
  const lowest = (over: number[], f: (s: number) => number): { min: number; at: number } => {
    let min = Infinity
    let at = 0
    for (const s of over) {
      const v = f(s)
      if (!(v >= min)) {
        min = v
        at = s
      }
    }
    return { min, at }
  }
  for (const t of ['child_process', 'zeromq'] as const) {
    if (!have(t, sizes)) continue
    const { min, at } = lowest(sizes, (s) => g(s, 'shmpipe') / g(s, t))
    bars.push({
      text: `faster than ${t === 'zeromq' ? t : `\`${t}\``} at every size`,
      met: min > 1,
      detail: `lowest ${ratio(min)}, at ${sizeLabel(at)}`,
    })
  }
  const small = rows.get(100)?.get(ours(100))
  if (small !== undefined) {
    const us = small.nsPerMessage / 1e3
    bars.push({ text: '100 B: ≤ 2 µs per message', met: us <= 2, detail: `${sig3(us)} µs` })
    if (have('child_process', [100])) {
      const x = g(100, 'shmpipe') / g(100, 'child_process')
      bars.push({ text: '100 B: ≥ 3× `child_process`', met: x >= 3, detail: ratio(x) })
    }
  }
  const big = sizes.filter((s) => s >= 1e6)
  const each = (over: number[], t: Transport, min: number, text: string): void => {
    if (!have(t, over)) return
    const f = (s: number): number => g(s, 'shmpipe') / g(s, t)
    bars.push({
      text,
      met: over.every((s) => f(s) >= min),
      detail: over.map((s) => `${sizeLabel(s)} ${ratio(f(s))}`).join(', '),
    })
  }
  each(big, 'memcpy', 0.6, '≥ 1 MB: ≥ 0.6× memcpy')
  each(big, 'zeromq', 2, '≥ 1 MB: ≥ 2× zeromq')
  const cpSizes = [1e7, 1e8].filter((s) => rows.has(s))
  each(
    cpSizes,
    'child_process',
    5,
    `≥ 5× \`child_process\` at ${cpSizes.map(sizeLabel).join(' and ')}`,
  )
  return bars
}

/**
 * The bars for each way of receiving with shmpipe, as a Markdown table: `get()` at every size,
 * `receive()` at every size, and the recommended call at each size ({@link RECOMMENDED}).
 */
export function barsTable(results: CellResult[], shmpipeReceive: ShmpipeReceive): string {
  const choices: [string, ShmpipeChoice][] = []
  const has = (t: Transport): boolean => results.some((r) => r.transport === t)
  if (has('shmpipe')) choices.push([column('shmpipe', shmpipeReceive), () => 'shmpipe'])
  if (has('shmpipe_receive'))
    choices.push([column('shmpipe_receive', shmpipeReceive), () => 'shmpipe_receive'])
  if (has('shmpipe') && has('shmpipe_receive') && shmpipeReceive === 'get')
    choices.push(['`get()` below 64 KiB, `receive()` from 64 KiB', RECOMMENDED])
  if (choices.length === 0) return ''
  const checked = choices.map(([, c]) => checkBars(results, c))
  const lines = [
    `| bar (issue 3) | ${choices.map(([name]) => name).join(' | ')} |`,
    `| --- | ${choices.map(() => '---').join(' | ')} |`,
  ]
  for (let i = 0; i < checked[0]!.length; i++) {
    const cells = checked.map((bars) => {
      const b = bars[i]
      return b === undefined ? '' : `${b.met ? '✅' : '❌'} ${b.detail}`
    })
    lines.push(`| ${checked[0]![i]!.text} | ${cells.join(' | ')} |`)
  }
  return lines.join('\n')
}

/** The spread of each cell's timed rounds: (slowest − fastest) / median, in percent. */
/** A cell's progress line after its `head`: µs per message, GB/s, rounds, and a failed check. */
export function resultLine(head: string, r: CellResult): string {
  if (r.error !== undefined) return `${head}  FAILED: ${r.error}`
  return (
    `${head}${(r.nsPerMessage / 1e3).toFixed(3).padStart(14)} µs/msg${r.gbps.toFixed(3).padStart(10)} GB/s` +
    `   rounds of ${r.counts.join('/')} msgs, spread ${roundSpread(r).toFixed(0)}%` +
    (r.bad > 0 || r.delivered !== r.expected
      ? `   CHECK FAILED: ${r.delivered}/${r.expected} delivered, ${r.bad} bad`
      : '')
  )
}

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
