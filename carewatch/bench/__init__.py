"""`carewatch bench`: performance measured side by side with naive baselines in one run."""
