"""Intent labels for the ``support_triage`` reference job.

Each label maps to a one-line description written to help a small language
model tell similar intents apart (e.g. refund vs. return, damaged vs. wrong
item, payment failed vs. double charge). The order of the mapping is stable
and is the order in which labels are shown to the model.
"""

from __future__ import annotations

__all__ = ["INTENTS"]

INTENTS: dict[str, str] = {
    "refund_request": (
        "The customer wants their money back for an order, without the item being damaged, wrong or missing."
    ),
    "return_request": (
        "The customer wants to send an item back or exchange it (size, fit, changed mind) and asks how."
    ),
    "order_status": (
        "The customer asks where an order is or when it will arrive, with no complaint about it being late."
    ),
    "cancel_order": "The customer wants to cancel an order that has not been delivered yet.",
    "change_shipping_address": (
        "The customer wants an order delivered to a different address than the one given at checkout."
    ),
    "damaged_item": "An item arrived broken, cracked, dented or defective on arrival.",
    "wrong_item": ("The customer received a different product, size or color than what they ordered."),
    "missing_item": "The package arrived but one or more ordered items were not in it.",
    "late_delivery": (
        "An order is overdue: it has not arrived past the promised delivery time and the customer is waiting."
    ),
    "payment_failed": ("The customer's payment was declined or failed and they cannot complete or pay for an order."),
    "double_charge": ("The customer was charged more than once for the same order and wants the duplicate reversed."),
    "invoice_request": "The customer needs an invoice, receipt or VAT document for an order.",
    "update_payment_method": (
        "The customer wants to change the card or payment method used for an order or stored on the account."
    ),
    "account_access": ("The customer cannot log in, reset their password or otherwise get into their account."),
    "change_email": "The customer wants to change the email address registered on their account.",
    "delete_account": "The customer wants their account closed and their personal data deleted.",
    "product_question": ("A question about a product's features, size, compatibility or availability before buying."),
    "warranty_claim": (
        "A product stopped working after normal use some time after delivery and the customer invokes the warranty."
    ),
    "discount_code": ("A promo, coupon or discount code does not work or the customer asks about one."),
    "subscription_cancel": ("The customer wants to stop a recurring subscription or future recurring charges."),
    "complaint": ("General dissatisfaction with the service, courier or support, without a specific fixable request."),
    "other": ("Anything that fits none of the other labels (store locations, partnerships, general inquiries)."),
}
