"""The Streamlit face: session state, cached studies, progress bars, errors (``ui``) and the plotly
figures the pages draw (``charts``).

The only part of slsviz that imports Streamlit or plotly. It calls the orchestrator
(:class:`slsviz.study.Study`) and never computes anything itself; the pages in ``pages/`` read like
a description of the screen.
"""
