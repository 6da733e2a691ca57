/** The console's page and stylesheet. The page holds no script or style of its own (CSP). */

export const CONSOLE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Outpost console</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/console/uplot.css">
<link rel="stylesheet" href="/console/console.css">
<script src="/console/uplot.js" defer></script>
<script src="/console/console.js" defer></script>
</head>
<body>
<header>
<strong>Outpost</strong>
<nav><a href="#/">Overview</a><a href="#/devices">Devices</a><a href="#/events">Events</a><a href="#/audit">Audit</a></nav>
<label>Admin token <input id="admin-token" type="password" autocomplete="off" spellcheck="false"></label>
</header>
<main aria-busy="true"><p>Loading…</p></main>
<noscript>The console needs JavaScript. The API it reads is under /v1/ (README "HTTP API").</noscript>
</body>
</html>
`;

export const CONSOLE_CSS = `
:root { color-scheme: light; --ok: #1e7e34; --bad: #c0392b; --warn: #b7791f; --muted: #666; --line: #ddd; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background: #f6f7f9; color: #222; }
header { display: flex; gap: 1.5rem; align-items: center; padding: 0.6rem 1rem; background: #1d2733; color: #fff; }
header nav { display: flex; gap: 1rem; flex: 1; }
header a { color: #cfd8e3; text-decoration: none; }
header a.current { color: #fff; border-bottom: 2px solid #fff; }
header input { margin-left: 0.4rem; width: 12rem; }
main { padding: 1rem; }
.grid { display: grid; gap: 1rem; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 0.8rem 1rem; overflow-x: auto; }
.card h2 { margin: 0 0 0.6rem; font-size: 1.1rem; }
.card h3 { margin: 0.8rem 0 0.4rem; font-size: 1rem; }
.stats { display: flex; flex-wrap: wrap; gap: 1.2rem; margin-bottom: 0.6rem; }
.stat span { display: block; color: var(--muted); font-size: 0.8rem; }
.stat.ok strong, span.ok, a.ok, .outcome.ok { color: var(--ok); }
.stat.bad strong, span.bad, td.bad, a.bad, p.bad, .outcome.bad { color: var(--bad); }
.stat.warn strong, span.warn, p.warn { color: var(--warn); }
.muted { color: var(--muted); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 0.3rem 0.5rem; border-bottom: 1px solid var(--line); white-space: nowrap; }
a.sort { color: inherit; font-weight: 600; text-decoration: none; }
.actions { display: flex; gap: 0.5rem; flex-wrap: wrap; margin: 0.6rem 0; }
button.action { padding: 0.3rem 0.7rem; cursor: pointer; }
.ranges a { margin-right: 0.5rem; }
.chart { margin: 0.5rem 0 1rem; }
.filter { display: flex; gap: 0.5rem; margin-bottom: 0.6rem; }
main[aria-busy="true"] { opacity: 0.6; }
`;
