// Stable colors per service name.

const PALETTE = [
  '#4e9af1', '#f0a040', '#3cc9a0', '#b07cf0', '#f06292', '#7fcf4f',
  '#f5d04c', '#3fc1d9', '#ff8a65', '#9fa8da', '#a1887f', '#4db6ac',
];

const assigned = new Map<string, string>();

function hash(text: string): number {
  let value = 2166136261;
  for (let index = 0; index < text.length; index += 1) {
    value ^= text.charCodeAt(index);
    value = Math.imul(value, 16777619);
  }
  return value >>> 0;
}

/** The color of a service: the same name always gets the same color. */
export function serviceColor(service: string): string {
  let color = assigned.get(service);
  if (!color) {
    color = PALETTE[hash(service) % PALETTE.length]!;
    assigned.set(service, color);
  }
  return color;
}

export const ERROR_COLOR = '#f25c54';
