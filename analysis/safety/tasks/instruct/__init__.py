"""Generation task YAMLs (tag ticketlab_instruct): the instruct suite. A package so that the YAMLs ship."""
