"""slsviz, the app: the router. Each page lives in pages/ and reads like a description of its screen."""

import streamlit as st

st.set_page_config(page_title="slsviz", layout="wide")
st.navigation([
    st.Page("pages/0_Model.py", title="Model", icon=":material/view_in_ar:", default=True),
    st.Page("pages/1_Layers.py", title="Layers", icon=":material/stacked_line_chart:", url_path="Layers"),
    st.Page("pages/2_Prune_and_benchmark.py", title="Prune & benchmark", icon=":material/content_cut:",
            url_path="Prune_and_benchmark"),
    st.Page("pages/3_Export.py", title="Export", icon=":material/download:", url_path="Export"),
    st.Page("pages/4_Compare.py", title="Compare criteria", icon=":material/compare_arrows:", url_path="Compare"),
    st.Page("pages/5_Tasks.py", title="Tasks", icon=":material/table_chart:", url_path="Tasks"),
]).run()
