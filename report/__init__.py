"""The report: plots and REPORT.md computed from the export manifest, bench results and trained weights."""
