//! What a repository holds and removing from it: its tag list (paginated
//! with `Link` as the distribution spec says) and manifest deletion by
//! digest, which `strata images prune` uses for stale key tags.

use http::{header, Method, StatusCode};

use super::{Call, ImageRef, Registry, RegistryError, MAX_DOCUMENT};

/// Pages of a tag list followed at most (10,000 tags at the page size asked).
const MAX_PAGES: usize = 10;

impl Registry {
    /// Every tag of `image`'s repository (empty when the repository does not exist).
    pub async fn tags(&self, image: &ImageRef) -> Result<Vec<String>, RegistryError> {
        let mut tags = Vec::new();
        let mut path = "tags/list?n=1000".to_owned();
        for _ in 0..MAX_PAGES {
            let response = self.get(image, &path, None).await?;
            if response.status == StatusCode::NOT_FOUND {
                break;
            }
            let response = self.check(image, "tag list", response).await?;
            let next = next_page(&response.headers, &image.repository);
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
/// header names, if it is one of this repository's tag lists.
fn next_page(headers: &http::HeaderMap, repository: &str) -> Option<String> {
    let link = headers.get(header::LINK)?.to_str().ok()?;
    let (target, params) = link.split_once(';')?;
    if !params.contains("rel=\"next\"") {
        return None;
    }
    let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
    let prefix = format!("/v2/{repository}/");
    target
        .strip_prefix(&prefix)
        .filter(|rest| rest.starts_with("tags/list"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_only_this_repositorys_next_tag_page() {
        let mut headers = http::HeaderMap::new();
        let link = "</v2/a/b/tags/list?last=x&n=1000>; rel=\"next\"";
        headers.insert(header::LINK, link.parse().unwrap());
        assert_eq!(
            next_page(&headers, "a/b").as_deref(),
            Some("tags/list?last=x&n=1000")
        );
        assert_eq!(next_page(&headers, "other"), None);
        let elsewhere = "<https://evil/v2/a/b/tags/list>; rel=\"next\"";
        headers.insert(header::LINK, elsewhere.parse().unwrap());
        assert_eq!(next_page(&headers, "a/b"), None);
    }
}
