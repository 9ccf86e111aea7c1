"""Reference values for tests/test_sensitivity.py: moderndid's port of HonestDiD on the
Medicaid-expansion event study. Needs ``pip install 'moderndid[didhonest]'`` (cvxpy),
which the tests themselves do not.

    .venv/bin/python tests/data/make_honestdid_reference.py

Run of 2026-11-23 (moderndid 0.2, pyfixest 0.60) printed, lb / ub:
relative magnitudes (C-LF) Mbar 0.5 / 1 / 1.5 / 2: 0.02413 0.066888 / 0.017094 0.071963 /
0.008587 0.079599 / -0.000666 0.087946;
smoothness (FLCI) M 0 / 0.01 / 0.02 / 0.03: 0.025967 0.060711 / 0.013175 0.078684 /
0.002834 0.090739 / -0.007165 0.100738.
"""

import pyfixest as pf
from moderndid import load_ehec
from moderndid.didhonest.sensitivity import create_sensitivity_results_rm, create_sensitivity_results_sm

df = load_ehec().to_pandas()
d = df[(df["year"] < 2016) & (df["yexp2"].isna() | (df["yexp2"] != 2015))].copy()
d["D"] = (d["yexp2"] == 2014).astype(float)
names = []
for year in range(2008, 2016):
    if year != 2013:
        d[f"ev{year}"] = ((d["year"] == year) & (d["D"] == 1)).astype(float)
        names.append(f"ev{year}")
fit = pf.feols("dins ~ " + "+".join(names) + " | stfips+year", d, vcov={"CRV1": "stfips"})
b, V = fit.coef()[names].to_numpy(), fit._vcov
print(create_sensitivity_results_rm(b, V, 5, 2, m_bar_vec=[0.5, 1, 1.5, 2]))
print(create_sensitivity_results_sm(b, V, 5, 2, m_vec=[0, 0.01, 0.02, 0.03]))
