// A small History API router: path patterns with `:params`, link interception, and an
// AbortSignal per page so a page's requests stop when the user navigates away.

export interface PageContext {
  /** Where the page renders; emptied before each render. */
  root: HTMLElement;
  /** Values of the pattern's `:params`, URL-decoded. */
  params: Record<string, string>;
  query: URLSearchParams;
  /** Aborted when another page (or the same page again) is rendered. */
  signal: AbortSignal;
}

export type Page = (context: PageContext) => void | Promise<void>;

interface Route {
  pattern: RegExp;
  names: string[];
  page: Page;
}

export interface NavigateOptions {
  /** Replace the history entry instead of pushing one. */
  replace?: boolean;
  /** Only update the URL; do not render. */
  silent?: boolean;
}

export class Router {
  private readonly routes: Route[] = [];
  private controller: AbortController | null = null;
  private readonly listeners: Array<(path: string) => void> = [];

  constructor(
    private readonly root: HTMLElement,
    private readonly notFound: Page,
  ) {}

  /** Adds a route; `pattern` is a path like `/trace/:id`. */
  add(pattern: string, page: Page): this {
    const names: string[] = [];
    const source = pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/:(\w+)/g, (_, name: string) => {
      names.push(name);
      return '([^/]+)';
    });
    this.routes.push({ pattern: new RegExp(`^${source}/?$`), names, page });
    return this;
  }

  /** Called with the path after every navigation (e.g. to highlight the nav). */
  onChange(listener: (path: string) => void): this {
    this.listeners.push(listener);
    return this;
  }

  start(): void {
    window.addEventListener('popstate', () => this.render());
    document.addEventListener('click', (event) => this.interceptClick(event));
    this.render();
  }

  navigate(url: string, options: NavigateOptions = {}): void {
    if (options.replace) history.replaceState(null, '', url);
    else history.pushState(null, '', url);
    if (!options.silent) {
      this.render();
      window.scrollTo(0, 0);
    }
  }

  private interceptClick(event: MouseEvent): void {
    if (event.defaultPrevented || event.button !== 0) return;
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    // Works for HTML and SVG links alike (an SVG <a> has no string `href` property).
    const anchor = (event.target as Element | null)?.closest?.('a');
    const href = anchor?.getAttribute('href');
    if (!anchor || !href || anchor.getAttribute('target') || anchor.hasAttribute('download')) return;
    const url = new URL(href, location.href);
    if (url.origin !== location.origin || url.pathname.startsWith('/api/')) return;
    event.preventDefault();
    if (url.href !== location.href) this.navigate(url.pathname + url.search + url.hash);
  }

  private render(): void {
    this.controller?.abort();
    const controller = new AbortController();
    this.controller = controller;
    const path = location.pathname;
    let page = this.notFound;
    let params: Record<string, string> = {};
    for (const route of this.routes) {
      const match = route.pattern.exec(path);
      if (match) {
        page = route.page;
        params = Object.fromEntries(route.names.map((name, index) => [name, decodeURIComponent(match[index + 1] ?? '')]));
        break;
      }
    }
    this.root.replaceChildren();
    for (const listener of this.listeners) listener(path);
    const context: PageContext = { root: this.root, params, query: new URLSearchParams(location.search), signal: controller.signal };
    Promise.resolve(page(context)).catch((error: unknown) => {
      if (!controller.signal.aborted) console.error(error);
    });
  }
}

let active: Router | null = null;

/** Navigates with the started router (a full page load before it starts). */
export function navigate(url: string, options: NavigateOptions = {}): void {
  if (active) active.navigate(url, options);
  else location.assign(url);
}

/** Marks `router` as the one `navigate` uses, and starts it. */
export function startRouter(router: Router): void {
  active = router;
  router.start();
}
