// Tiny DOM builders: text always goes through text nodes, never innerHTML.

import { ApiError, setQueryToken } from './api';

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;

function apply(element: Element, attrs: Attrs | null, children: Child[]): void {
  if (attrs) {
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (typeof value === 'function') {
        element.addEventListener(name.replace(/^on/, '').toLowerCase(), value);
      } else if (value === true) {
        element.setAttribute(name, '');
      } else {
        element.setAttribute(name, String(value));
      }
    }
  }
  append(element, ...children);
}

/** Appends children, skipping null/false, turning strings and numbers into text. */
export function append(parent: Node, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element. Attributes named `on…` with a function value become listeners. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs | null = null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  apply(element, attrs, children);
  return element;
}

/** An `<option>` of a select. */
export function option(value: string, label: string, selected = false): HTMLOptionElement {
  const element = h('option', { value }, label);
  element.selected = selected;
  return element;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** An SVG element. */
export function s<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Attrs | null = null,
  ...children: Child[]
): SVGElementTagNameMap[K] {
  const element = document.createElementNS(SVG_NS, tag);
  apply(element, attrs, children);
  return element;
}

/** Replaces every child of `parent`. */
export function replace(parent: Element, ...children: Child[]): void {
  parent.replaceChildren();
  append(parent, ...children);
}

export function spinner(label = 'Loading…'): HTMLElement {
  return h('div', { class: 'state state-loading', role: 'status' }, h('span', { class: 'spinner' }), label);
}

export function errorBox(error: unknown): HTMLElement {
  if (error instanceof ApiError && error.status === 401) return tokenForm(error.message);
  const message = error instanceof Error ? error.message : String(error);
  return h('div', { class: 'state state-error', role: 'alert' }, h('strong', null, 'Error: '), message);
}

/** Asks for the query token when the API wants one; the page reloads with it. */
function tokenForm(message: string): HTMLElement {
  const input = h('input', {
    type: 'password',
    name: 'token',
    placeholder: 'query token',
    autocomplete: 'current-password',
    'aria-label': 'Query token',
  });
  const submit = (event: Event): void => {
    event.preventDefault();
    setQueryToken(input.value.trim());
    window.location.reload();
  };
  return h(
    'form',
    { class: 'state state-error token-form', role: 'alert', onsubmit: submit as EventListener },
    h('strong', null, 'This Caracal needs a query token. '),
    h('span', { class: 'state-hint' }, message),
    input,
    h('button', { type: 'submit' }, 'Use token'),
  );
}

export function empty(title: string, hint?: string): HTMLElement {
  return h('div', { class: 'state state-empty' }, h('div', { class: 'state-title' }, title), hint && h('div', { class: 'state-hint' }, hint));
}
