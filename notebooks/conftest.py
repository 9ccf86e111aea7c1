"""nbval settings for the chapters: compare text, not the HTML rendering of tables
(the same numbers, with markup that changes with pandas versions)."""


def pytest_collectstart(collector):
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("text/html",)
