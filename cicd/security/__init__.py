"""Security: who may drive the server.

Until authentication arrives, the server trusts the requests that reach it on
its own names. :mod:`cicd.security.hosts` checks the Host and Origin of each
request against those names, which keeps web pages on other sites from
driving a server on 127.0.0.1.
"""
