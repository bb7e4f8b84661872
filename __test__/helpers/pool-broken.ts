/** A task module that fails to load (for the process pool tests). */

export function never(): number {
  return 1
}

throw new SyntaxError('this module fails to load on purpose')
