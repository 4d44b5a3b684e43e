// Lookback choices shared by the search and dependencies pages.

export interface Lookback {
  value: string;
  label: string;
  ms: number;
}

export const LOOKBACKS: Lookback[] = [
  { value: '15m', label: 'Last 15 minutes', ms: 15 * 60_000 },
  { value: '1h', label: 'Last hour', ms: 3_600_000 },
  { value: '6h', label: 'Last 6 hours', ms: 6 * 3_600_000 },
  { value: '24h', label: 'Last 24 hours', ms: 24 * 3_600_000 },
  { value: '2d', label: 'Last 2 days', ms: 2 * 86_400_000 },
];

export function lookbackMs(value: string | null, fallback: string): number {
  return (LOOKBACKS.find((choice) => choice.value === value) ?? LOOKBACKS.find((choice) => choice.value === fallback)!).ms;
}
