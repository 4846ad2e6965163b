//! Reading AWS's XML answers (EC2, STS): the text of a child element, and the error of an
//! error answer. roxmltree parses; nothing here panics on garbage.

use roxmltree::Node;

/// The text of the first child element named `name` (namespaces ignored).
pub fn child_text(node: Node, name: &str) -> Option<String> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
        .map(|c| c.text().unwrap_or("").trim().to_string())
}

/// The first element named `name` anywhere below `node`.
pub fn find<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.descendants().find(|n| n.is_element() && n.tag_name().name() == name)
}

/// The elements named `name` directly below `node`.
pub fn children<'a, 'i>(node: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children().filter(move |c| c.is_element() && c.tag_name().name() == name)
}

/// `(code, message, request id)` of an EC2 (`<Response><Errors><Error>`) or STS
/// (`<ErrorResponse><Error>`) error answer.
pub fn error(text: &str) -> Option<(String, String, Option<String>)> {
    let doc = roxmltree::Document::parse(text).ok()?;
    let error = find(doc.root(), "Error")?;
    let code = child_text(error, "Code")?;
    let message = child_text(error, "Message").unwrap_or_default();
    let request_id = find(doc.root(), "RequestID")
        .or_else(|| find(doc.root(), "RequestId"))
        .and_then(|n| n.text())
        .map(|t| t.trim().to_string());
    Some((code, message, request_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_of_both_shapes() {
        let ec2 = "<?xml version=\"1.0\"?><Response><Errors><Error><Code>UnauthorizedOperation</Code>\
                   <Message>You are not authorized</Message></Error></Errors><RequestID>r-1</RequestID></Response>";
        assert_eq!(
            error(ec2),
            Some(("UnauthorizedOperation".into(), "You are not authorized".into(), Some("r-1".into())))
        );
        let sts = "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
                   <Code>AccessDenied</Code><Message>no</Message></Error><RequestId>r-2</RequestId></ErrorResponse>";
        assert_eq!(error(sts), Some(("AccessDenied".into(), "no".into(), Some("r-2".into()))));
        for garbage in ["", "<", "<Response/>", "{\"a\":1}", "<Error><Message>m</Message></Error>"] {
            assert_eq!(error(garbage), None, "{garbage}");
        }
    }
}
