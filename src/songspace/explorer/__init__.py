"""The explorer: a page to look at and listen to the library, its neighbours and the evaluation.

`data` gathers what the page shows (tracks on a 2-D map, neighbours, the evaluation) from an
index, its model, metrics/eval.json and dvclive; `server` serves it locally (`songspace serve`);
`judge` and `judgements` ask a listener for odd-one-out judgements and store them;
`export` writes the same page as one self-contained HTML file (the `explorer` stage). The
page's own script and style sheet live in `static/` and are served by the project (no CDN).
"""
