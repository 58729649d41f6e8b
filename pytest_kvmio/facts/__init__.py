"""Collection: connections to hosts, host facts, the target list, guest transports and disk mapping, host CPU sampling."""
