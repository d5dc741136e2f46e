"""slsviz, the app (``streamlit run app.py``): the router in slsviz/app/router.py, which an installed
``slsviz app`` runs too. Each page lives in pages/ and reads like a description of its screen."""

from slsviz.app.router import run

run()
