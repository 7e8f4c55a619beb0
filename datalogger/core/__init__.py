"""Plain delivery logic: no actor code, no ``thespian`` import (a test checks it).

The actors in :mod:`datalogger.actors` decode a message, call a class of this
package, and send what it asks them to send. Every class here takes its clock
and its way to send as arguments, so it is unit-tested with fake ones.
"""
