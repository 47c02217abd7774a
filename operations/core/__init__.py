"""llmhost's pure core: settings (every tunable, validated), the flag planner, the version tables (eras, locks,
model families, cards, kernel module packages, driver branches) and the fleet's roles. Imports no pyinfra; the
components in operations/ decide with it and act through pyinfra."""
