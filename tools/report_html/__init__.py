"""Self-contained HTML reports: ``onnxpress report R.json [more.json] -o report.html``, ``opt --report out.html``
and every sweep's ``DIR/report.html``."""

from onnxpress.tools.report_html.page import reports_page, sweep_page

__all__ = ["reports_page", "sweep_page"]
