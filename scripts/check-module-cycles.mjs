#!/usr/bin/env node
// Fails when the modules of a Rust crate import each other in a cycle, and prints the cycle.
//
// Usage: node scripts/check-module-cycles.mjs [SRC_DIR...]   (default: crates/core/src crates/node/src)
// Run by `npm run lint`.
//
// A module is a file: `foo.rs`, or `foo/mod.rs` for a directory module; inline `mod x { … }`
// blocks (tests, platform `imp`s) belong to their file. The modules are found by following
// `mod x;` from `lib.rs`, so binaries under `src/bin/` (crates of their own) are not included.
// Module A depends on module B when A's code (comments and strings stripped) names a path
// through B: `crate::…`, `super::…`, `self::…`, or a child module's name, in `use` trees
// (braces included) and in expressions alike. A path depends on the deepest file module it
// goes through: `crate::queue::ring::Ring` depends on `queue/ring`, not on `queue`, so siblings
// in a directory may use each other through their parent's path without that counting as a
// use of the parent. Declaring `mod x;` is not a use. The crate root (`lib.rs`) is the façade
// and not a node: `crate::Name` counts as a use of the module that the root re-exports `Name`
// from (`pub use m::Name`), and names the root defines itself are left out.
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve as resolvePath } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const dirs = process.argv.slice(2)
if (dirs.length === 0) dirs.push('crates/core/src', 'crates/node/src')

/** Source with comments, strings and char literals blanked out (lifetimes kept). */
function stripCode(src) {
  let out = ''
  let i = 0
  while (i < src.length) {
    const c = src[i]
    const next = src[i + 1]
    if (c === '/' && next === '/') {
      while (i < src.length && src[i] !== '\n') i++
    } else if (c === '/' && next === '*') {
      let depth = 1
      i += 2
      while (i < src.length && depth > 0) {
        if (src[i] === '/' && src[i + 1] === '*') (depth++, (i += 2))
        else if (src[i] === '*' && src[i + 1] === '/') (depth--, (i += 2))
        else i++
      }
      out += ' '
    } else if (c === 'r' && /^r#*"/.test(src.slice(i, i + 10)) && !/\w/.test(src[i - 1] ?? '')) {
      const hashes = /^r(#*)"/.exec(src.slice(i))[1]
      const end = src.indexOf('"' + hashes, i + 2 + hashes.length)
      i = end < 0 ? src.length : end + 1 + hashes.length
      out += '""'
    } else if (c === '"') {
      i++
      while (i < src.length && src[i] !== '"') i += src[i] === '\\' ? 2 : 1
      i++
      out += '""'
    } else if (c === "'" && /^'(\\.[^']*|[^\\'])'/.test(src.slice(i, i + 12))) {
      i += /^'(\\.[^']*|[^\\'])'/.exec(src.slice(i, i + 12))[0].length
      out += "' '"
    } else {
      out += c
      i++
    }
  }
  return out
}

const tokenize = (code) => code.match(/[A-Za-z_][A-Za-z0-9_]*|::|\S/g) ?? []

/** Parses a path or use tree at `tokens[i]` (just after a leading segment and `::`). */
function parseTree(tokens, i, prefix, out) {
  if (tokens[i] === '{') {
    i++
    while (i < tokens.length && tokens[i] !== '}') {
      i = parseTree(tokens, i, prefix, out)
      if (tokens[i] === ',') i++
    }
    return i + 1
  }
  const path = [...prefix]
  while (i < tokens.length && /^[A-Za-z_]/.test(tokens[i])) {
    path.push(tokens[i++])
    if (tokens[i] !== '::') break
    i++
    if (tokens[i] === '{' || tokens[i] === '*') {
      if (tokens[i] === '*') return (out.push(path), i + 1)
      return parseTree(tokens, i, path, out)
    }
  }
  if (tokens[i] === 'as') {
    path.alias = tokens[i + 1]
    i += 2
  }
  out.push(path)
  return i
}

function checkCrate(srcDir) {
  const abs = resolvePath(root, srcDir)
  const modules = new Map() // id ('' for the root) → { file, children: Map(name → id), code }
  const load = (id, file) => {
    const code = stripCode(readFileSync(file, 'utf8'))
    const children = new Map()
    const m = { file, children, code }
    modules.set(id, m)
    const base = id === '' ? abs : file.endsWith('mod.rs') ? dirname(file) : file.slice(0, -3)
    for (const [, name] of code.matchAll(/\bmod\s+([A-Za-z_]\w*)\s*;/g)) {
      const childId = id === '' ? name : `${id}/${name}`
      const flat = join(base, `${name}.rs`)
      const nested = join(base, name, 'mod.rs')
      const childFile = existsSync(flat) ? flat : existsSync(nested) ? nested : null
      if (!childFile) throw new Error(`${relative(root, file)}: no file for mod ${name}`)
      children.set(name, childId)
      load(childId, childFile)
    }
  }
  load('', join(abs, 'lib.rs'))

  // The root's re-exports: name → path (root-relative), to resolve `crate::Name`.
  const reexports = new Map()
  const rootTokens = tokenize(modules.get('').code)
  for (let i = 0; i < rootTokens.length; i++) {
    if (rootTokens[i] !== 'use') continue
    const paths = []
    parseTree(rootTokens, i + 1, [], paths)
    for (const p of paths) {
      const start = p[0] === 'crate' || p[0] === 'self' ? 1 : 0
      if (p.length > start) reexports.set(p.alias ?? p.at(-1), p.slice(start))
    }
  }

  /** The deepest file module a root-relative path goes through ('' = the root itself). */
  function resolve(path, seen = new Set()) {
    let id = ''
    let k = 0
    while (k < path.length && modules.get(id).children.has(path[k]))
      id = modules.get(id).children.get(path[k++])
    if (id !== '' || k >= path.length) return id
    const via = reexports.get(path[0])
    if (!via || seen.has(path[0]) || via[0] === path[0]) return ''
    seen.add(path[0])
    return resolve([...via, ...path.slice(1)], seen)
  }

  const edges = new Map()
  for (const [id, m] of modules) {
    if (id === '') continue
    const deps = new Set()
    const tokens = tokenize(m.code)
    // Inline `mod x {` blocks shift what `super` means; track them by brace depth.
    const inline = [] // brace depths at which an inline module opened
    let depth = 0
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i]
      if (t === 'mod' && /^[A-Za-z_]/.test(tokens[i + 1] ?? '') && tokens[i + 2] === '{') {
        inline.push(depth)
        depth++
        i += 2
        continue
      }
      if (t === '{') depth++
      else if (t === '}') {
        depth--
        if (inline.at(-1) === depth) inline.pop()
      }
      if (tokens[i + 1] !== '::' || tokens[i - 1] === '::' || tokens[i - 1] === '$') continue
      let base
      const segs = id.split('/')
      if (t === 'crate') base = []
      else if (t === 'self') base = inline.length ? null : segs
      else if (t === 'super') {
        // `super` in an inline module is this file; `super::super` climbs on.
        let up = 1
        let j = i
        while (tokens[j + 2] === 'super' && tokens[j + 3] === '::') (up++, (j += 2))
        const fileUps = up - inline.length
        base = fileUps <= 0 ? null : segs.slice(0, segs.length - fileUps)
        i = j
      } else if (m.children.has(t) && inline.length === 0) base = segs
      else continue
      const paths = []
      parseTree(tokens, i + 2, [], paths)
      if (base === null) continue // within this file
      for (const p of paths) {
        const lead = t === 'crate' || t === 'self' || t === 'super' ? [] : [t]
        const target = resolve([...base, ...lead, ...p])
        if (target !== '' && target !== id) deps.add(target)
      }
    }
    edges.set(id, deps)
  }

  // Tarjan's strongly connected components; each one larger than a module is a cycle.
  let index = 0
  const idx = new Map()
  const low = new Map()
  const stack = []
  const onStack = new Set()
  const cycles = []
  const connect = (v) => {
    idx.set(v, index)
    low.set(v, index++)
    stack.push(v)
    onStack.add(v)
    for (const w of edges.get(v)) {
      if (!idx.has(w)) (connect(w), low.set(v, Math.min(low.get(v), low.get(w))))
      else if (onStack.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)))
    }
    if (low.get(v) === idx.get(v)) {
      const scc = []
      let w
      do ((w = stack.pop()), onStack.delete(w), scc.push(w))
      while (w !== v)
      if (scc.length > 1) cycles.push(scc)
    }
  }
  for (const v of edges.keys()) if (!idx.has(v)) connect(v)

  /** One shortest cycle through `start` inside `scc`, as a path. */
  const cycleThrough = (start, scc) => {
    const inScc = new Set(scc)
    const prev = new Map([[start, null]])
    const queue = [start]
    while (queue.length) {
      const v = queue.shift()
      for (const w of edges.get(v)) {
        if (w === start) {
          const path = [start]
          for (let u = v; u !== start; u = prev.get(u)) path.splice(1, 0, u)
          return [...path, start]
        }
        if (inScc.has(w) && !prev.has(w)) (prev.set(w, v), queue.push(w))
      }
    }
    return [start]
  }
  for (const scc of cycles) {
    const shown = new Set()
    for (const start of scc.sort()) {
      const cycle = cycleThrough(start, scc)
      const key = [...cycle.slice(0, -1)].sort().join(' ')
      if (shown.has(key)) continue
      shown.add(key)
      console.error(`${srcDir}: import cycle: ${cycle.join(' → ')}`)
    }
  }
  if (cycles.length === 0) console.log(`${srcDir}: ${edges.size} modules, no import cycle`)
  return cycles.length === 0
}

let ok = true
for (const dir of dirs) ok = checkCrate(dir) && ok
process.exit(ok ? 0 : 1)
