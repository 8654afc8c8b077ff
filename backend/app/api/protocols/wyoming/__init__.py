"""The Wyoming protocol (Home Assistant's speech services) over the same services as HTTP."""
