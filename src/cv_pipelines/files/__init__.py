"""Files written so that a crash never leaves half of one: atomic writes, links, locks."""
