"""From labels to numbers: measures, the cohort table, longitudinal statistics, agreement with manual
labels, and their figures."""
