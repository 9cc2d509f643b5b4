"""banger's guest agent: stdlib-only, Python >= 3.7, shipped into every image as a package.

The host imports only `protocol` from here (the frame codec both sides share); nothing in this
package imports from the rest of banger, which does not exist in the guest.
"""
