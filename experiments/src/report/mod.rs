//! Plots and the HTML report of a run directory (being written).
