// The search form's tag filter: `key=value` pairs separated by spaces.

/**
 * Parses `http.status_code=500 error=true msg="two words"` into a map.
 * Throws an Error naming the first malformed pair.
 */
export function parseTags(text: string): Record<string, string> {
  const tags: Record<string, string> = {};
  const pattern = /\s*([^\s=]+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))|\s*(\S+)/gy;
  let match: RegExpExecArray | null;
  while ((match = pattern.exec(text)) !== null) {
    if (match[0].trim() === '') break;
    const [, key, quoted, plain, stray] = match;
    if (stray !== undefined || key === undefined) {
      throw new Error(`tag "${stray ?? match[0].trim()}" is not key=value`);
    }
    tags[key] = quoted !== undefined ? quoted.replace(/\\(.)/g, '$1') : (plain ?? '');
  }
  return tags;
}
