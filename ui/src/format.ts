// Number, duration and time formatting.

/** Microseconds as a short human duration: 850µs, 12.3ms, 1.25s, 2m 3s. */
export function formatDuration(us: number): string {
  if (!Number.isFinite(us)) return '–';
  const abs = Math.abs(us);
  if (abs < 1) return `${round(us * 1000, 3)}ns`;
  if (abs < 1000) return `${round(us, 3)}µs`;
  if (abs < 1_000_000) return `${round(us / 1000, 3)}ms`;
  if (abs < 60_000_000) return `${round(us / 1_000_000, 3)}s`;
  const minutes = Math.floor(abs / 60_000_000);
  const seconds = Math.round((abs % 60_000_000) / 1_000_000);
  return `${us < 0 ? '-' : ''}${minutes}m ${seconds}s`;
}

/** A duration for an axis label: a bare 0 at the origin. */
export const formatAxisDuration = (us: number) => (us === 0 ? '0' : formatDuration(us));

/** Rounds to `digits` significant digits, dropping trailing zeros. */
function round(value: number, digits: number): string {
  return String(Number(value.toPrecision(digits)));
}

const pad = (value: number, width = 2) => String(value).padStart(width, '0');

/** Unix ms as local `YYYY-MM-DD HH:MM:SS`. */
export function formatDateTime(ms: number): string {
  const date = new Date(ms);
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${formatClock(ms)}`;
}

/** Unix ms as local `HH:MM:SS`. */
export function formatClock(ms: number, withMillis = false): string {
  const date = new Date(ms);
  const base = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  return withMillis ? `${base}.${pad(date.getMilliseconds(), 3)}` : base;
}

/** Unix ms as local `HH:MM`. */
export function formatHourMinute(ms: number): string {
  const date = new Date(ms);
  return `${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

/** How long ago `ms` was, e.g. `5 min ago`. */
export function formatAgo(ms: number, now = Date.now()): string {
  const seconds = Math.round((now - ms) / 1000);
  if (seconds < 5) return 'just now';
  if (seconds < 60) return `${seconds} s ago`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.round(hours / 24)} days ago`;
}

/** A count with thousands separators or a k/M suffix. */
export function formatCount(value: number): string {
  if (value >= 1_000_000) return `${round(value / 1_000_000, 3)}M`;
  if (value >= 10_000) return `${round(value / 1000, 3)}k`;
  return value.toLocaleString('en-US');
}

/** A count with its noun, singular for one: `1 span`, `12 spans`, `1.5k spans`. */
export function formatCountOf(value: number, noun: string): string {
  return `${formatCount(value)} ${noun}${value === 1 ? '' : 's'}`;
}

/** A rate per second, e.g. `0.25/s`, `12/s`, `3.1/min` for small ones. */
export function formatRate(perSecond: number): string {
  if (perSecond === 0) return '0/s';
  if (perSecond < 0.1) return `${round(perSecond * 60, 2)}/min`;
  return `${round(perSecond, 3)}/s`;
}

export function formatPercent(fraction: number): string {
  if (!Number.isFinite(fraction)) return '–';
  if (fraction === 0) return '0%';
  const percent = fraction * 100;
  return `${percent < 0.1 ? '<0.1' : round(percent, percent < 10 ? 2 : 3)}%`;
}

export const shortId = (id: string) => id.slice(0, 7);
