// Entry point: the app shell (header and navigation) and the routes.

import './style.css';
import { empty, h } from './dom';
import { dependenciesPage } from './pages/dependencies';
import { searchPage } from './pages/search';
import { servicesPage } from './pages/services';
import { tracePage } from './pages/trace';
import { navigate, Router, startRouter } from './router';

const NAV = [
  { href: '/search', label: 'Search', match: (path: string) => path === '/' || path.startsWith('/search') },
  { href: '/services', label: 'Services', match: (path: string) => path.startsWith('/services') },
  { href: '/dependencies', label: 'Dependencies', match: (path: string) => path.startsWith('/dependencies') },
];

function shell(): { main: HTMLElement; links: HTMLAnchorElement[] } {
  const links = NAV.map((item) => h('a', { href: item.href, class: 'nav-link' }, item.label));
  const lookup = h('input', { type: 'search', placeholder: 'Trace ID…', 'aria-label': 'Look up a trace by id', spellcheck: 'false', autocomplete: 'off' });
  const form = h('form', { class: 'trace-lookup', role: 'search' }, lookup);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const id = lookup.value.trim().toLowerCase();
    if (id) navigate(`/trace/${encodeURIComponent(id)}`);
    lookup.value = '';
  });
  const main = h('main', { class: 'page', id: 'page' });
  const app = document.getElementById('app')!;
  app.replaceChildren(
    h(
      'header',
      { class: 'topbar' },
      h('a', { class: 'brand', href: '/' }, h('span', { class: 'brand-mark', 'aria-hidden': 'true' }), 'Caracal'),
      h('nav', { class: 'nav', 'aria-label': 'Main' }, ...links),
      form,
    ),
    main,
  );
  return { main, links };
}

const { main, links } = shell();
const router = new Router(main, ({ root }) => {
  root.append(empty('Page not found', `Nothing lives at ${location.pathname}.`));
});
router
  .add('/', searchPage)
  .add('/search', searchPage)
  .add('/trace/:id', tracePage)
  .add('/services', servicesPage)
  .add('/dependencies', dependenciesPage)
  .onChange((path) => {
    document.title = 'Caracal';
    NAV.forEach((item, index) => {
      const active = item.match(path);
      links[index]!.classList.toggle('active', active);
      if (active) links[index]!.setAttribute('aria-current', 'page');
      else links[index]!.removeAttribute('aria-current');
    });
  });
startRouter(router);
