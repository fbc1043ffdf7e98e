"""Server-rendered status pages: one job (progress, counts, errors by reason, links) and a
tenant's job list. Plain HTML and CSS, no script and no build step; unfinished jobs refresh
themselves every few seconds.
"""

from __future__ import annotations

from jinja2 import DictLoader, Environment, select_autoescape

from asr_assets.platform.api.schemas import Job

_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{% if refresh %}<meta http-equiv="refresh" content="{{ refresh }}">{% endif %}
<title>{% block title %}{% endblock %} · asr-platform</title>
<style>
 body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:56rem;
   color:#1d2430;padding:0 1rem}
 h1{font-size:1.4rem;margin:0 0 .2rem} .muted{color:#667085} code{font-size:.9em}
 .state{display:inline-block;padding:.1rem .55rem;border-radius:1rem;font-weight:600;
   font-size:.8rem}
 .QUEUED{background:#eef2ff;color:#3730a3} .IN_PROGRESS{background:#e0f2fe;color:#075985}
 .COMPLETED{background:#dcfce7;color:#166534} .FAILED{background:#fee2e2;color:#991b1b}
 .CANCELED{background:#f3f4f6;color:#374151}
 .bar{height:1.4rem;background:#eef0f3;border-radius:.4rem;overflow:hidden;display:flex;
   margin:.4rem 0}
 .bar .done{background:#16a34a} .bar .failed{background:#dc2626}
 table{border-collapse:collapse;width:100%;margin:.6rem 0 1.2rem}
 th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #e5e7eb}
 th{font-weight:600;color:#475467;font-size:.85rem}
 td.n{text-align:right;font-variant-numeric:tabular-nums}
 .cards{display:grid;grid-template-columns:repeat(4,1fr);gap:.6rem;margin:1rem 0}
 .card{border:1px solid #e5e7eb;border-radius:.5rem;padding:.6rem .8rem}
 .card b{display:block;font-size:1.3rem} a{color:#1d4ed8}
</style></head><body>{% block body %}{% endblock %}</body></html>"""

_JOB = """{% extends "base" %}{% block title %}{{ job.job_id }}{% endblock %}{% block body %}
<p class="muted">tenant {{ job.tenant }} · workload <code>{{ job.workload }}</code> ·
 priority {{ job.priority.value }}</p>
<h1>{{ job.name or job.job_id }} <span class="state {{ job.state.value }}"
 id="state">{{ job.state.value }}</span></h1>
<p class="muted"><code>{{ job.job_id }}</code></p>
{% if job.failure_reason %}<p><b>Failure:</b> {{ job.failure_reason }}</p>{% endif %}
<div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100"
 aria-valuenow="{{ '%.1f' % job.progress.percent }}">
 <div class="done" style="width:{{ '%.2f' % done_pct }}%"></div>
 <div class="failed" style="width:{{ '%.2f' % failed_pct }}%"></div></div>
<p id="progress"><b>{{ '%.1f' % job.progress.percent }}%</b> ·
 {{ job.progress.done }} of {{ job.progress.total }} files done,
 {{ job.progress.failed }} failed</p>
<div class="cards">
 <div class="card"><span class="muted">files done</span><b>{{ job.progress.done }}</b></div>
 <div class="card"><span class="muted">failed</span><b>{{ job.progress.failed }}</b></div>
 <div class="card"><span class="muted">audio</span>
  <b>{{ '%.1f' % (job.usage.audio_seconds / 60) }} min</b></div>
 <div class="card"><span class="muted">est. cost</span><b>{{ '%.4f' % job.usage.estimated_cost }}
  {{ job.usage.currency }}</b></div></div>
<h2>Errors by reason</h2>
{% if job.errors_by_reason %}<table><tr><th>reason</th><th>files</th></tr>
{% for reason, n in job.errors_by_reason|dictsort %}<tr><td><code>{{ reason }}</code></td>
<td class="n">{{ n }}</td></tr>{% endfor %}</table>{% else %}<p class="muted">none</p>{% endif %}
{% if job.failed_shards %}<p>Failed shards: {{ job.failed_shards|join(', ') }}</p>{% endif %}
<h2>Times</h2><table>
<tr><th>created</th><td>{{ job.created_at }}</td></tr>
<tr><th>started</th><td>{{ job.started_at or '—' }}</td></tr>
<tr><th>finished</th><td>{{ job.finished_at or '—' }}</td></tr></table>
<h2>Links</h2><ul>
<li>results: {% if job.results_prefix %}<code>{{ job.results_prefix }}</code>{% else %}
 <span class="muted">not yet</span>{% endif %}</li>
<li><a href="{{ job.links.logs }}">logs</a> (API, with your key){% if job.links.run %} ·
 <a href="{{ job.links.run }}">Dagster run</a>{% endif %}</li></ul>
{% endblock %}"""

_LIST = """{% extends "base" %}{% block title %}jobs of {{ tenant }}{% endblock %}{% block body %}
<h1>Jobs of {{ tenant }}</h1>
<table><tr><th>job</th><th>workload</th><th>state</th><th>progress</th><th>created</th></tr>
{% for job in jobs %}<tr><td><a href="{{ job.links.page }}">{{ job.name or job.job_id }}</a></td>
<td><code>{{ job.workload }}</code></td><td><span class="state {{ job.state.value }}">
{{ job.state.value }}</span></td><td class="n">{{ '%.1f' % job.progress.percent }}%</td>
<td>{{ job.created_at.strftime('%Y-%m-%d %H:%M') }}</td></tr>
{% else %}<tr><td colspan="5" class="muted">no jobs yet</td></tr>{% endfor %}</table>
{% endblock %}"""

_env = Environment(
    loader=DictLoader({"base": _BASE, "job": _JOB, "list": _LIST}),
    autoescape=select_autoescape(default=True, default_for_string=True),
)
REFRESH_S = 5


def job_page(job: Job) -> str:
    total = job.progress.total or 1
    return _env.get_template("job").render(
        job=job,
        done_pct=100 * job.progress.done / total,
        failed_pct=100 * job.progress.failed / total,
        refresh=REFRESH_S if job.state.value in {"QUEUED", "IN_PROGRESS"} else None,
    )


def job_list_page(tenant: str, jobs: list[Job]) -> str:
    active = any(job.state.value in {"QUEUED", "IN_PROGRESS"} for job in jobs)
    return _env.get_template("list").render(
        tenant=tenant, jobs=jobs, refresh=REFRESH_S if active else None
    )
