"""The "four ones" routines (daily check, weekly call, monthly inspection and visit) and
supervision reports."""
