"""Installed portals: the store (`store`: installations by member_id, tokens encrypted and refreshed under a
lock, settings written under a row lock), the install lifecycle (`install`), REST pacing shared through the
database (`ratelimit`), deal funnels (`funnels`) and people's names (`usernames`) read from Bitrix24.

May import adapters, storage, domain, `b24app.context`; never pipeline, web or sandbox.
"""
