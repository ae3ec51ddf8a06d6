//! What a repository holds and removing from it: its tag list (paginated
//! with `Link` as the distribution spec says) and manifest deletion by
//! digest, which `strata images prune` uses for stale key tags.

use http::{header, Method, StatusCode};

use super::{Call, ImageRef, Registry, RegistryError, MAX_DOCUMENT};

/// Pages of a tag list followed at most (100,000 tags at the page size asked).
const MAX_PAGES: usize = 100;

impl Registry {
    /// Every tag of `image`'s repository (empty when the repository does not
    /// exist). Whole or an error: prune decides what other tags protect from
    /// this list, so a list cut short (too many pages, a next page elsewhere)
    /// is refused, never taken for all there is.
    pub async fn tags(&self, image: &ImageRef) -> Result<Vec<String>, RegistryError> {
        let incomplete = |reason: String| RegistryError::Invalid {
            image: image.to_string(),
            what: "tag list".into(),
            reason: format!(
                "{reason}; the list would be incomplete, so nothing is decided from it"
            ),
        };
        let mut tags = Vec::new();
        let mut path = "tags/list?n=1000".to_owned();
        for page in 1.. {
            if page > MAX_PAGES {
                return Err(incomplete(format!("more than {MAX_PAGES} pages")));
            }
            let response = self.get(image, &path, None).await?;
            if response.status == StatusCode::NOT_FOUND {
                break;
            }
            let response = self.check(image, "tag list", response).await?;
            let next = next_page(&response.headers, image).map_err(incomplete)?;
            let body = self.read(image, "tag list", response, MAX_DOCUMENT).await?;
            let page: TagList =
                serde_json::from_slice(&body).map_err(|e| RegistryError::Invalid {
                    image: image.to_string(),
                    what: "tag list".into(),
                    reason: e.to_string(),
                })?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(next) => path = next,
                None => break,
            }
        }
        Ok(tags)
    }

    /// Deletes the manifest `digest` from `image`'s repository — and with it
    /// every tag that names it. The registry must allow deletes.
    pub async fn delete_manifest(
        &self,
        image: &ImageRef,
        digest: &str,
    ) -> Result<(), RegistryError> {
        let call = Call {
            method: Method::DELETE,
            path: format!("manifests/{digest}"),
            headers: Vec::new(),
            body: bytes::Bytes::new(),
            scopes: vec![format!("repository:{}:delete", image.repository)],
        };
        let response = self.call(image, call).await?;
        if response.status == StatusCode::METHOD_NOT_ALLOWED {
            return Err(RegistryError::Status {
                image: image.to_string(),
                what: format!("deleting {digest}"),
                status: response.status,
                detail: " (this registry does not allow deletes: storage.delete.enabled)".into(),
            });
        }
        self.check(image, &format!("deleting {digest}"), response)
            .await?;
        Ok(())
    }
}

#[derive(serde::Deserialize)]
struct TagList {
    tags: Option<Vec<String>>,
}

/// The path below `/v2/REPOSITORY/` of the next page a `Link: <…>; rel="next"`
/// header names (none on the last page). A next page that is not one of
/// this repository's tag lists on this registry (relative, or absolute with
/// this host) is an error.
fn next_page(headers: &http::HeaderMap, image: &ImageRef) -> Result<Option<String>, String> {
    let Some(link) = headers.get(header::LINK) else {
        return Ok(None);
    };
    let link = link
        .to_str()
        .map_err(|_| "a Link header that is not text".to_owned())?;
    let Some((target, params)) = link.split_once(';') else {
        return Err(format!("a Link header strata cannot read: {link:?}"));
    };
    if !params.contains("rel=\"next\"") {
        return Ok(None);
    }
    let target = target.trim().trim_start_matches('<').trim_end_matches('>');
    let path = match target.split_once("://") {
        Some((_, rest)) => match rest.split_once('/') {
            Some((host, path)) if host == image.registry => format!("/{path}"),
            _ => return Err(format!("the next page is on another host: {target}")),
        },
        None => target.to_owned(),
    };
    path.strip_prefix(&format!("/v2/{}/", image.repository))
        .filter(|rest| rest.starts_with("tags/list"))
        .map(|rest| Some(rest.to_owned()))
        .ok_or_else(|| format!("the next page is not this repository's tag list: {target}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_only_this_repositorys_next_tag_page() {
        let image: ImageRef = "reg:5000/a/b:x".parse().unwrap();
        let other: ImageRef = "reg:5000/other:x".parse().unwrap();
        let mut headers = http::HeaderMap::new();
        assert_eq!(next_page(&headers, &image), Ok(None));
        let link = "</v2/a/b/tags/list?last=x&n=1000>; rel=\"next\"";
        headers.insert(header::LINK, link.parse().unwrap());
        let next = Some("tags/list?last=x&n=1000".to_owned());
        assert_eq!(next_page(&headers, &image), Ok(next.clone()));
        assert!(next_page(&headers, &other).is_err());
        let absolute = "<http://reg:5000/v2/a/b/tags/list?last=x&n=1000>; rel=\"next\"";
        headers.insert(header::LINK, absolute.parse().unwrap());
        assert_eq!(next_page(&headers, &image), Ok(next));
        let elsewhere = "<https://evil/v2/a/b/tags/list>; rel=\"next\"";
        headers.insert(header::LINK, elsewhere.parse().unwrap());
        assert!(next_page(&headers, &image)
            .unwrap_err()
            .contains("another host"));
    }
}
